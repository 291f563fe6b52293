# Sourced by ab_wheels.sh and candidate_ab.sh: their shared command line,
# NAME=WHEEL_DIR... -- 'SCRIPT ARGS'..., split into the arrays `builds` and `scripts`.
# shellcheck shell=bash
split_builds() {
    builds=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        builds+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    scripts=("$@")
}
