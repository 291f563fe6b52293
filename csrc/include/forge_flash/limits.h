// What the kernels take: the one place these numbers are written. The C API checks them, the
// dispatcher routes by them, CMake reads the head-dim list from FORGE_FLASH_FOR_EACH_HEAD_DIM,
// and the Python binding exports them (`_C.limits()`), which the Python adapter and the test
// fake read. C-compatible: the C API header includes it.
#ifndef FORGE_FLASH_LIMITS_H_
#define FORGE_FLASH_LIMITS_H_

// The head dimensions with their own kernels; any other multiple of FF_HEAD_DIM_MULTIPLE up
// to FF_MAX_HEAD_DIM runs in the next larger one (loads and stores predicated on head_dim).
#define FORGE_FLASH_FOR_EACH_HEAD_DIM(X) X(32) X(64) X(96) X(128) X(160) X(192) X(224) X(256)

enum {
  FF_MAX_HEAD_DIM = 256,
  FF_HEAD_DIM_MULTIPLE = 8,  // 16-byte chunks of 16-bit elements: the tile copies' unit
  FF_ALIGNMENT_BYTES = 16,   // base pointers of q, k, v, out
  FF_STRIDE_MULTIPLE = 8,    // strides of q, k, v, out in elements (16 bytes)
  FF_MAX_SPLITS = 128,       // split-KV parts of a query block's keys (the combine kernel's)
};

#endif  // FORGE_FLASH_LIMITS_H_
