// cuda_runtime.h — CPU-emulator stand-in: `#include <cuda_runtime.h>` in a kernel file resolves
// here under -I kernels/emu and brings in the device-side emulation. No host runtime API: the
// emulator is driven through the C ABI in emu_runtime.cpp.
#pragma once
#include "cuda_emu.h"
