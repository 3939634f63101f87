// SATA host execution of CUDA C: lets a generated CUDA kernel module compile unmodified with
// g++ (`g++ -std=c++20 -include host_exec.hpp`) and run on the CPU, so that the exact source
// NVRTC compiles for a GPU is also executed and checked on machines without one.
//
// Model:
// - Blocks of a grid run one after another. The threads of a block run as user-space fibers
//   (ucontext) on the calling OS thread; a fiber runs until it reaches `__syncthreads()` or a
//   warp collective (`__shfl*_sync`, `__syncwarp`), then the next fiber runs. When every live
//   thread waits at the barrier, all are released; when every lane of a warp waits at a warp
//   collective, the values are exchanged and the warp is released.
// - Threads are visited in increasing index order, or in decreasing order with
//   `SATA_HOST_REVERSE`: a race where a thread reads what another writes before a barrier
//   passes in one order and shows in the other.
// - `__shared__` variables are placed in one linker section and filled with NaN bytes before
//   every block, so a read of shared memory before any thread wrote it shows up as NaN.
// - A barrier some threads never reach (they exited, or wait at a different collective) is a
//   deadlock on a GPU; here it is reported as an error instead of hanging.
// - `atomicAdd` is a plain read-modify-write: only one fiber runs at a time.
//
// What this cannot catch (docs/backends/cuda.md): the memory model (`__threadfence`, ordering
// between blocks, which here run in sequence), warp-synchronous code without collectives
// (lanes here never run in lockstep), and tensor-core (mma) instructions, which it does not
// provide. The generator's kernels use none of these: blocks communicate only through
// `atomicAdd` into an output the host reads after the launch, and threads only through shared
// memory between barriers.

#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __constant__ static
#define __shared__ static __attribute__((section("sata_shared")))

struct sata_dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

// The built-in indices of the running fiber; the scheduler sets them before every switch.
// Internal linkage: every kernel library has its own (the runtime serialises launches).
static sata_dim3 threadIdx, blockIdx, blockDim, gridDim;
inline constexpr int warpSize = 32;

// Bounds of the shared-memory section (defined by the linker when the section exists).
extern "C" char __start_sata_shared[] __attribute__((weak));
extern "C" char __stop_sata_shared[] __attribute__((weak));

namespace sata_host {

// Launch flags.
inline constexpr int REVERSE = 1;

enum class Wait { Ready, Barrier, Warp, Done };

struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    Wait wait = Wait::Ready;
    // Warp collective in flight: the value offered, the lane it reads, and the result.
    std::uint64_t offered = 0;
    unsigned int source = 0;
    std::uint64_t result = 0;
};

struct Block {
    std::vector<Fiber> fibers;
    ucontext_t scheduler;
    unsigned int running = 0;
    void (*body)(void*) = nullptr;
    void* closure = nullptr;
    // Set by a thread that did something this model cannot run; ends the launch with an error.
    const char* fault = nullptr;
};

static Block* current = nullptr;
inline constexpr std::size_t STACK_BYTES = 256 * 1024;

inline void set_thread_index(unsigned int i) {
    threadIdx.x = i % blockDim.x;
    threadIdx.y = i / blockDim.x % blockDim.y;
    threadIdx.z = i / (blockDim.x * blockDim.y);
}

inline void yield_to_scheduler(Wait wait) {
    Fiber& f = current->fibers[current->running];
    f.wait = wait;
    swapcontext(&f.context, &current->scheduler);
}

inline void fiber_main() {
    current->body(current->closure);
    current->fibers[current->running].wait = Wait::Done;
    // Returning resumes `uc_link`, the scheduler.
}

// Index of `i`'s warp in the block, and the lanes that warp has.
inline unsigned int warp_lanes(unsigned int warp) {
    const unsigned int n = static_cast<unsigned int>(current->fibers.size());
    const unsigned int begin = warp * 32;
    return n - begin < 32 ? n - begin : 32;
}

// Runs the fibers of one block to completion. Returns false with `error` set on a deadlock.
inline bool run_block(int flags, char* error, unsigned long error_len) {
    Block& b = *current;
    const unsigned int n = static_cast<unsigned int>(b.fibers.size());
    for (unsigned int i = 0; i < n; ++i) {
        Fiber& f = b.fibers[i];
        f.wait = Wait::Ready;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.data();
        f.context.uc_stack.ss_size = f.stack.size();
        f.context.uc_link = &b.scheduler;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        // Run every ready fiber until it waits or finishes.
        for (unsigned int k = 0; k < n; ++k) {
            const unsigned int i = (flags & REVERSE) ? n - 1 - k : k;
            if (b.fibers[i].wait != Wait::Ready) {
                continue;
            }
            b.running = i;
            set_thread_index(i);
            swapcontext(&b.scheduler, &b.fibers[i].context);
        }
        if (b.fault != nullptr) {
            std::snprintf(error, error_len, "%s", b.fault);
            return false;
        }
        unsigned int done = 0, barrier = 0, warp = 0;
        for (const Fiber& f : b.fibers) {
            done += f.wait == Wait::Done;
            barrier += f.wait == Wait::Barrier;
            warp += f.wait == Wait::Warp;
        }
        if (done == n) {
            return true;
        }
        // Warps whose every lane waits at a collective exchange values and go on.
        bool progressed = false;
        for (unsigned int w = 0; w * 32 < n; ++w) {
            const unsigned int lanes = warp_lanes(w);
            unsigned int waiting = 0;
            for (unsigned int l = 0; l < lanes; ++l) {
                waiting += b.fibers[w * 32 + l].wait == Wait::Warp;
            }
            if (waiting == 0) {
                continue;
            }
            if (waiting != lanes) {
                std::snprintf(error, error_len,
                              "warp %u: %u of %u lanes wait at a warp collective, the others do "
                              "not reach it (divergent collective, a deadlock on a GPU)",
                              w, waiting, lanes);
                return false;
            }
            for (unsigned int l = 0; l < lanes; ++l) {
                Fiber& f = b.fibers[w * 32 + l];
                f.result = b.fibers[w * 32 + (f.source < lanes ? f.source : l)].offered;
                f.wait = Wait::Ready;
            }
            progressed = true;
        }
        if (progressed) {
            continue;
        }
        if (barrier + done == n && done == 0) {
            for (Fiber& f : b.fibers) {
                f.wait = Wait::Ready;
            }
            continue;
        }
        std::snprintf(error, error_len,
                      "__syncthreads: %u of %u threads wait at the barrier, %u exited and %u wait "
                      "elsewhere (divergent barrier, a deadlock on a GPU)",
                      barrier, n, done, warp);
        return false;
    }
}

// Launches `kernel` over `grid` x `block` with the parameter array of `cuLaunchKernel`:
// `params[i]` points at the value of argument `i`.
template <class... Args, std::size_t... I>
inline int launch_impl(void (*kernel)(Args...), const unsigned int* grid, const unsigned int* block,
                       unsigned int shared_bytes, void** params, int flags, char* error,
                       unsigned long error_len, std::index_sequence<I...>) {
    if (shared_bytes != 0) {
        std::snprintf(error, error_len, "dynamic shared memory is not supported (%u bytes asked)",
                      shared_bytes);
        return 1;
    }
    const unsigned long threads =
        static_cast<unsigned long>(block[0]) * block[1] * block[2];
    if (threads == 0 || threads > 1024 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0) {
        std::snprintf(error, error_len, "invalid launch: grid (%u, %u, %u), block (%u, %u, %u)",
                      grid[0], grid[1], grid[2], block[0], block[1], block[2]);
        return 1;
    }
    struct Closure {
        void (*kernel)(Args...);
        void** params;
    } closure{kernel, params};
    Block b;
    b.fibers.resize(threads);
    for (Fiber& f : b.fibers) {
        f.stack.resize(STACK_BYTES);
    }
    b.closure = &closure;
    b.body = [](void* c) {
        Closure* k = static_cast<Closure*>(c);
        k->kernel(*static_cast<Args*>(k->params[I])...);
    };
    Block* outer = current;
    current = &b;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    int status = 0;
    for (unsigned int z = 0; z < grid[2] && status == 0; ++z) {
        for (unsigned int y = 0; y < grid[1] && status == 0; ++y) {
            for (unsigned int x = 0; x < grid[0] && status == 0; ++x) {
                blockIdx = {x, y, z};
                if (__start_sata_shared != nullptr) {
                    std::memset(__start_sata_shared, 0xff,
                                static_cast<std::size_t>(__stop_sata_shared - __start_sata_shared));
                }
                if (!run_block(flags, error, error_len)) {
                    status = 2;
                }
            }
        }
    }
    current = outer;
    return status;
}

template <class... Args>
inline int launch(void (*kernel)(Args...), const unsigned int* grid, const unsigned int* block,
                  unsigned int shared_bytes, void** params, int flags, char* error,
                  unsigned long error_len) {
    return launch_impl(kernel, grid, block, shared_bytes, params, flags, error, error_len,
                       std::index_sequence_for<Args...>{});
}

// A warp collective: offer `value`, read lane `source`'s offer once the whole warp is here.
template <class T>
inline T exchange(unsigned int mask, T value, unsigned int source) {
    static_assert(sizeof(T) <= sizeof(std::uint64_t), "warp collectives move at most 64 bits");
    if (mask != 0xffffffffu) {
        // Partial masks are not modelled: fail the launch rather than guess.
        current->fault = "only full-mask warp collectives are supported";
    }
    Fiber& f = current->fibers[current->running];
    f.offered = 0;
    std::memcpy(&f.offered, &value, sizeof(T));
    f.source = source;
    yield_to_scheduler(Wait::Warp);
    T out;
    std::memcpy(&out, &current->fibers[current->running].result, sizeof(T));
    return out;
}

inline unsigned int lane_id() { return current->running % 32; }

}  // namespace sata_host

// Every thread of the block waits here until all have arrived.
inline void __syncthreads() { sata_host::yield_to_scheduler(sata_host::Wait::Barrier); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    sata_host::exchange<unsigned int>(mask, 0u, sata_host::lane_id());
}
// Memory fences order nothing here: one fiber runs at a time (docs/backends/cuda.md: not checked).
inline void __threadfence() {}
inline void __threadfence_block() {}

template <class T>
inline T __shfl_sync(unsigned int mask, T value, int lane, int width = 32) {
    const unsigned int me = sata_host::lane_id();
    const unsigned int base = me / width * width;
    return sata_host::exchange(mask, value, base + static_cast<unsigned int>(lane) % width);
}
template <class T>
inline T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
    const unsigned int me = sata_host::lane_id();
    const unsigned int other = me ^ static_cast<unsigned int>(lane_mask);
    return sata_host::exchange(mask, value, other / width == me / width ? other : me);
}
template <class T>
inline T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
    const unsigned int me = sata_host::lane_id();
    const unsigned int other = me + delta;
    return sata_host::exchange(mask, value, other / width == me / width ? other : me);
}
template <class T>
inline T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = 32) {
    const unsigned int me = sata_host::lane_id();
    const unsigned int other = me - delta;
    return sata_host::exchange(mask, value, me % width >= delta ? other : me);
}

// One fiber runs at a time, so a read-modify-write is atomic.
template <class T>
inline T atomicAdd(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}

inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// Round-to-nearest operations that CUDA never contracts; g++ runs with -ffp-contract=off.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// Exports `kernel` as `sata_host_launch_<kernel>`, taking `cuLaunchKernel`'s parameter array.
#define SATA_HOST_EXPORT(kernel)                                                          \
    extern "C" __attribute__((visibility("default"))) int sata_host_launch_##kernel(     \
        const unsigned int* grid, const unsigned int* block, unsigned int shared_bytes,    \
        void** params, int flags, char* error, unsigned long error_len) {                  \
        return ::sata_host::launch(&kernel, grid, block, shared_bytes, params, flags, error, \
                                   error_len);                                             \
    }
