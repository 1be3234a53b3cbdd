#!/usr/bin/env bash
# A CUDA toolchain from PyPI, so that `cargo build --release --features cuda` builds on a machine
# with no GPU and no system CUDA (as this project's development machines): NVIDIA's CUDA 13.4
# wheels (nvcc, the runtime and CCCL headers, cuBLAS, cuRAND, NVRTC) in a venv, arranged as a
# CUDA_HOME, plus a link stub of the driver library (libcuda.so): the driver is not on PyPI; the
# stub only satisfies the linker, and the real libcuda.so.1 of the GPU machine's driver is loaded
# at run time, as with the stubs of NVIDIA's own toolkit.
#
#   source tools/cuda_toolchain.sh [PREFIX]      # default PREFIX: ~/.cache/expanse-cuda
#   cargo build --release --features cuda
#
# It exports CUDA_HOME (and CUDA_PATH, CUDA_ROOT), PATH (nvcc), LIBRARY_PATH, LD_LIBRARY_PATH
# (cuBLAS, cuRAND, NVRTC of the venv), CUDA_COMPUTE_CAP (default 90: H100/H200; set it before
# sourcing for another GPU: 80 for A100, 89 for L40S/RTX 40xx) and CUDARC_CUDA_VERSION.
# Needs python3 with venv and pip, and gcc (both on the development machines).

_expanse_cuda() {
    local prefix=${1:-$HOME/.cache/expanse-cuda}
    local version=13.4.3
    if [ ! -x "$prefix/venv/bin/python" ]; then
        python3 -m venv "$prefix/venv" || return 1
    fi
    if ! "$prefix/venv/bin/python" -c "import importlib.metadata as m; assert m.version('cuda-toolkit') == '$version'" 2>/dev/null; then
        "$prefix/venv/bin/pip" install -q "cuda-toolkit[nvcc,cudart,cccl,cublas,curand,nvrtc]==$version" || return 1
    fi
    local cu
    cu=$("$prefix/venv/bin/python" -c "import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu13'))") || return 1
    [ -x "$cu/bin/nvcc" ] || { echo "cuda_toolchain: no nvcc in $cu/bin" >&2; return 1; }

    # CUDA_HOME: bin, include, nvvm as installed; lib64 with the unversioned names the linker
    # looks for; lib64/stubs/libcuda.so.
    local home=$prefix/cuda
    mkdir -p "$home/lib64/stubs"
    for d in bin include nvvm; do ln -sfn "$cu/$d" "$home/$d"; done
    local lib name
    for lib in "$cu"/lib/*.so.*; do
        name=$(basename "$lib")
        ln -sfn "$lib" "$home/lib64/$name"
        ln -sfn "$lib" "$home/lib64/${name%%.so.*}.so"
    done
    ln -sfn "$cu/lib/libcudart_static.a" "$home/lib64/libcudart_static.a"
    ln -sfn "$cu/lib/libcudadevrt.a" "$home/lib64/libcudadevrt.a"
    if ! grep -qs "return 34" "$home/lib64/stubs/libcuda_stub.c" || [ "$home/include/cuda.h" -nt "$home/lib64/stubs/libcuda.so" ]; then
        # Every driver entry point cuda.h declares (with __CUDA_API_VERSION_INTERNAL both the
        # plain and the _v2/_v3 names), as a function that returns CUDA_ERROR_STUB_LIBRARY (34),
        # as NVIDIA's own stubs do: run against the stub, a CUDA device fails to open cleanly.
        gcc -E -P -D__CUDA_API_VERSION_INTERNAL -I"$home/include" "$home/include/cuda.h" \
            | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | sed 's/[[:space:](]//g' | sort -u \
            | awk '{ print "int " $1 "(void) { return 34; }" }' > "$home/lib64/stubs/libcuda_stub.c"
        gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/stubs/libcuda.so" "$home/lib64/stubs/libcuda_stub.c" || return 1
    fi

    export CUDA_HOME=$home CUDA_PATH=$home CUDA_ROOT=$home
    export PATH=$home/bin:$PATH
    export LIBRARY_PATH=$home/lib64:$home/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
    export LD_LIBRARY_PATH=$home/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    export CUDARC_CUDA_VERSION=13040
    echo "CUDA $(nvcc --version | grep -o 'release [0-9.]*') from PyPI in $home; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
}
_expanse_cuda "$@"
