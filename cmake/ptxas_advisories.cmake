# The CUDA compiler launcher of the kernel library (CMakeLists.txt): runs one compile command,
# the arguments after `--`, passes its output through, and fails it where ptxas reports that it
# serialized a kernel's wgmma instructions (advisory C7520). ptxas does that when asynchronous
# matrix products are in flight across a branch of the kernel's code; the kernel still runs
# and gives the right answer, only without overlap anywhere in it: the Hopper kernel's
# persistent instances ran 13-26% slower that way on the H200 with no other sign
# (docs/benchmarks.md, 2026-12-01). Usage: cmake -P ptxas_advisories.cmake -- <command>...
set(_command "")
set(_in_command FALSE)
math(EXPR _last "${CMAKE_ARGC} - 1")
foreach(_i RANGE 0 ${_last})
  if(_in_command)
    string(REPLACE ";" "\\;" _arg "${CMAKE_ARGV${_i}}")  # one argument, whatever it holds
    list(APPEND _command "${_arg}")
  elseif("${CMAKE_ARGV${_i}}" STREQUAL "--")
    set(_in_command TRUE)
  endif()
endforeach()
if(NOT _command)
  message(FATAL_ERROR "ptxas_advisories.cmake: no command after --")
endif()
execute_process(COMMAND ${_command} RESULT_VARIABLE _rc
                OUTPUT_VARIABLE _out ERROR_VARIABLE _err ECHO_OUTPUT_VARIABLE ECHO_ERROR_VARIABLE)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "the compile failed (${_rc})")
endif()
if("${_out}${_err}" MATCHES "C7520")
  message(FATAL_ERROR "ptxas serialized wgmma instructions (C7520, above): keep every branch "
                      "of a Hopper kernel after the wgmma_wait that retires its matrix products")
endif()
