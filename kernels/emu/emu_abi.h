/* emu_abi.h — the C ABI of the CPU emulator (emu_runtime.cpp), as called from Rust over FFI.
 * Plain C; the Rust side mirrors these declarations in an `extern "C"` block. */
#ifndef AEM_EMU_ABI_H
#define AEM_EMU_ABI_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* Return codes of aem_emu_launch. */
enum {
  AEM_EMU_OK = 0,
  AEM_EMU_UNKNOWN_KERNEL = 1, /* no kernel of that name (or registered twice) */
  AEM_EMU_BAD_SIGNATURE = 2,  /* sig differs from the kernel's registered signature */
  AEM_EMU_BAD_CONFIG = 3,     /* grid/block out of range, > 1024 threads, dyn smem > 227 KiB, null args */
  AEM_EMU_KERNEL_ERROR = 4    /* __trap, assert, barrier / warp-op misuse, deadlock */
};

/* Runs kernel `name` on grid (gx,gy,gz) of blocks (bx,by,bz) and returns when it has finished.
 * args: like cuLaunchKernel's kernelParams, args[i] points to the value of parameter i.
 * sig: one char per parameter, checked against the registered signature: 'p' any pointer,
 *   'i' int32, 'u' uint32, 'l' int64, 'U' uint64, 'f' float, 'd' double, 'b' bool,
 *   's' a struct by value. Returns AEM_EMU_OK, or a code above with a one-line message in err
 *   (NUL-terminated, truncated to err_len). Thread-safe: concurrent launches run one at a time. */
int aem_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, size_t dyn_smem_bytes, void** args, const char* sig, char* err,
                   size_t err_len);
/* Order in which runnable threads of a block are resumed (process-wide, from the next launch):
 * 0 thread-index order, 1 reverse, 2 shuffled from `seed` (reproducible). Initial value from
 * env AEM_EMU_ORDER=default|reverse|shuffle[:seed]. */
void aem_emu_set_order(int mode, unsigned long long seed);
/* Worker threads for later launches; 0 = number of online CPUs (initial value: env
 * AEM_EMU_WORKERS, else 0). Clamped to 256. */
void aem_emu_set_workers(unsigned n);
/* The registry: names and signatures of all registered kernels (index 0..count-1). */
int aem_emu_kernel_count(void);
const char* aem_emu_kernel_name(int i);
const char* aem_emu_kernel_sig(int i);
/* The emulator's float <-> __nv_bfloat16 conversions (cuda_bf16.h), for the exhaustive check
 * against the Rust `half` crate. */
unsigned short aem_emu_f32_to_bf16_bits(float f);
float aem_emu_bf16_bits_to_f32(unsigned short b);

#ifdef __cplusplus
}
#endif
#endif
