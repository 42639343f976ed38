#!/usr/bin/env bash
# Build llama-cpp-python (the runtime of recursa's embedded model) for this machine, cache the wheel
# per set of build flags, and install it into the current Python.
#
# Why a script: PyPI ships llama-cpp-python only as source, and pip caches the wheel it compiles by
# source archive, not by CMAKE_ARGS, so changing the flags later silently reinstalls the old build.
# Here each flag set gets its own cached wheel, and switching builds takes seconds, not 5 minutes.
#
#   scripts/build-llama-cpp.sh            portable x86-64 build (AVX2/FMA/F16C): the default; the
#                                         -march=native build crashes on some VMs
#   scripts/build-llama-cpp.sh native     tuned for this CPU (-march=native); may be a little faster
#   scripts/build-llama-cpp.sh cuda       NVIDIA GPU (needs the CUDA toolkit: nvcc)
#   scripts/build-llama-cpp.sh metal      Apple silicon GPU
#   CMAKE_ARGS="..." scripts/build-llama-cpp.sh    any other llama.cpp CMake flags
#
# Then: pip install '.[local]'   (llama-cpp-python is already satisfied, so it is not rebuilt)
# Environment: PYTHON (default: python3), RECURSA_HOME / XDG_CACHE_HOME (where wheels are cached).
set -euo pipefail

VERSION=0.3.36
PYTHON=${PYTHON:-python3}

case "${1:-portable}" in
    portable) flags="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
    native) flags="-DGGML_NATIVE=ON" ;;
    cuda) flags="-DGGML_CUDA=on" ;;
    metal) flags="-DGGML_METAL=on" ;;
    *) echo "usage: $0 [portable|native|cuda|metal]   (or set CMAKE_ARGS)" >&2; exit 2 ;;
esac
flags=${CMAKE_ARGS:-$flags}

cache_root=${RECURSA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/recursa}
key=$("$PYTHON" -c 'import hashlib, sys, sysconfig
print(hashlib.sha256(" ".join([sys.argv[1], sys.argv[2], sys.implementation.cache_tag,
      sysconfig.get_platform()]).encode()).hexdigest()[:12])' "$VERSION" "$flags")
wheels="$cache_root/wheels/llama-cpp-python-$VERSION-$key"

if ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
    echo "Building llama-cpp-python $VERSION with CMAKE_ARGS=\"$flags\" (about 5 minutes on 2 cores)..." >&2
    rm -rf "$wheels.tmp" && mkdir -p "$wheels"
    CMAKE_ARGS="$flags" "$PYTHON" -m pip wheel --no-deps --no-cache-dir "llama-cpp-python==$VERSION" -w "$wheels.tmp"
    mv "$wheels.tmp"/llama_cpp_python-*.whl "$wheels"/ && rmdir "$wheels.tmp"
    echo "$flags" >"$wheels/CMAKE_ARGS"
else
    echo "Using the cached build for CMAKE_ARGS=\"$flags\" in $wheels" >&2
fi

"$PYTHON" -m pip install --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
"$PYTHON" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__, "installed")'
