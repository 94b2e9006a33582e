// emu_selftest_kernels.cpp — the selftest's kernel translation unit, in the same shape as the one
// build.rs generates for the crate: emulator header, kernel sources, then one registration each.
#include "cuda_emu.h"
#include "emu_selftest.cu"
#include "emu_register.h"

AEM_EMU_KERNEL(block_sum);
AEM_EMU_KERNEL(warp_ops);
AEM_EMU_KERNEL(shfl64);
AEM_EMU_KERNEL(votes);
AEM_EMU_KERNEL(sync_preds);
AEM_EMU_KERNEL(dyn_smem);
AEM_EMU_KERNEL(atomics);
AEM_EMU_KERNEL(last_block_sum);
AEM_EMU_KERNEL(f2h);
AEM_EMU_KERNEL(h2f);
AEM_EMU_KERNEL(indices);
AEM_EMU_KERNEL_AS("scale_t_3", scale_t<3>);
AEM_EMU_KERNEL(row_lse);
AEM_EMU_KERNEL(sync_spin);
AEM_EMU_KERNEL(missing_barrier);
AEM_EMU_KERNEL(skip_barrier);
AEM_EMU_KERNEL(divergent_barrier);
AEM_EMU_KERNEL(mixed_warp_ops);
AEM_EMU_KERNEL(shfl_exited_lane);
AEM_EMU_KERNEL(warp_vs_block_deadlock);
AEM_EMU_KERNEL(trap_kernel);
AEM_EMU_KERNEL(assert_kernel);
AEM_EMU_KERNEL(oob_write);
AEM_EMU_KERNEL(stack_use);
