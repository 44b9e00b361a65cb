#pragma once
// Memory that is overwritten before it goes back to the allocator, for decrypted personal data
// (GDPR Art. 32): a container that grows or is freed leaves no readable copy in the heap.
#include <cstddef>
#include <memory>
#include <string>

#include <openssl/crypto.h>

namespace gdpr {

// `Upstream` supplies and takes back the memory (std::allocator; tests pass one that inspects it).
template <typename T, template <typename> class Upstream = std::allocator>
struct basic_wiping_allocator {
    using value_type = T;
    template <typename U>
    struct rebind {
        using other = basic_wiping_allocator<U, Upstream>;
    };

    basic_wiping_allocator() noexcept = default;
    template <typename U>
    basic_wiping_allocator(const basic_wiping_allocator<U, Upstream>&) noexcept {}

    T* allocate(std::size_t n) { return Upstream<T>().allocate(n); }
    void deallocate(T* p, std::size_t n) noexcept {
        OPENSSL_cleanse(p, n * sizeof(T));
        Upstream<T>().deallocate(p, n);
    }

    template <typename U>
    bool operator==(const basic_wiping_allocator<U, Upstream>&) const noexcept { return true; }
    template <typename U>
    bool operator!=(const basic_wiping_allocator<U, Upstream>&) const noexcept { return false; }
};

template <typename T>
using wiping_allocator = basic_wiping_allocator<T>;

using wiped_string = std::basic_string<char, std::char_traits<char>, wiping_allocator<char>>;

} // namespace gdpr
