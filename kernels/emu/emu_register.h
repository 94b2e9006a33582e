// emu_register.h — registers kernels with the CPU emulator. Include after cuda_emu.h and the
// kernel sources, then at namespace scope:
//   AEM_EMU_KERNEL(token_stats_f16_v1)              // name = the identifier
//   AEM_EMU_KERNEL_AS("reduce_256", reduce<256>)    // explicit name (template instances)
// Each use creates a static object whose constructor records {name, signature, thunk}. The
// signature has one char per parameter: 'p' pointer, 'i' int32, 'u' uint32, 'l' int64,
// 'U' uint64, 'f' float, 'd' double, 'b' bool, 's' struct by value (enums use their underlying
// type). The thunk calls the kernel with *(T_i*)args[i], like cuLaunchKernel's kernelParams.
//
// Link note: the registering object file is referenced by nothing, so link it whole
// (`+whole-archive`) or its constructors are dropped; aem_emu_kernel_count() shows the result.
#pragma once
#include <cstddef>
#include <type_traits>
#include <utility>

namespace aem_emu {
using Thunk = void (*)(void** args);
void register_kernel(const char* name, const char* sig, Thunk thunk);

template <typename T> struct dependent_false : std::false_type {};

template <typename T>
constexpr char sig_char() {
  using U = std::remove_cv_t<T>;
  if constexpr (std::is_pointer_v<U>) return 'p';
  else if constexpr (std::is_same_v<U, bool>) return 'b';
  else if constexpr (std::is_enum_v<U>) return sig_char<std::underlying_type_t<U>>();
  else if constexpr (std::is_integral_v<U> && sizeof(U) == 4) return std::is_signed_v<U> ? 'i' : 'u';
  else if constexpr (std::is_integral_v<U> && sizeof(U) == 8) return std::is_signed_v<U> ? 'l' : 'U';
  else if constexpr (std::is_same_v<U, float>) return 'f';
  else if constexpr (std::is_same_v<U, double>) return 'd';
  else if constexpr (std::is_class_v<U> && std::is_trivially_copyable_v<U>) return 's';
  else static_assert(dependent_false<U>::value, "kernel parameter type has no signature char");
}

template <auto F, typename Fn = decltype(F)> struct KernelInfo;
template <auto F, typename... A>
struct KernelInfo<F, void (*)(A...)> {
  static constexpr char sig[sizeof...(A) + 1] = {sig_char<A>()..., '\0'};
  static void thunk(void** args) { call(args, std::index_sequence_for<A...>{}); }
  template <std::size_t... I>
  static void call(void** args, std::index_sequence<I...>) {
    (void)args;
    F(*static_cast<std::remove_cv_t<A>*>(args[I])...);
  }
};

struct Registrar {
  Registrar(const char* name, const char* sig, Thunk thunk) { register_kernel(name, sig, thunk); }
};
}  // namespace aem_emu

#define AEM_EMU_CAT2(a, b) a##b
#define AEM_EMU_CAT(a, b) AEM_EMU_CAT2(a, b)
#define AEM_EMU_KERNEL_AS(name, ...)                                                      \
  static const ::aem_emu::Registrar AEM_EMU_CAT(aem_emu_registrar_, __COUNTER__)(         \
      name, ::aem_emu::KernelInfo<&__VA_ARGS__>::sig, &::aem_emu::KernelInfo<&__VA_ARGS__>::thunk)
#define AEM_EMU_KERNEL(fn) AEM_EMU_KERNEL_AS(#fn, fn)
