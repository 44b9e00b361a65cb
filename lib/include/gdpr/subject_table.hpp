#pragma once
// An open-addressing hash table keyed by subject identifier, for per-message lookups among
// hundreds of thousands of subjects: one contiguous array, linear probing, the hash stored
// beside short keys kept inline (std::string's small buffer), so a lookup usually touches one
// cache line. Erase shifts entries back (no tombstones). Not thread-safe.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace gdpr {

// Starts loading every cache line `object` lies on (a small object may straddle two or three).
template <typename T>
void prefetch_object(const T& object) {
    constexpr std::uintptr_t LINE = 64;
    const auto at = reinterpret_cast<std::uintptr_t>(&object);
    for (std::uintptr_t line = at & ~(LINE - 1); line < at + sizeof(T); line += LINE)
        __builtin_prefetch(reinterpret_cast<const void*>(line));
}

template <typename Value>
class subject_table {
public:
    subject_table() : slots_(16) {}

    const Value* find(std::string_view key) const {
        const std::uint64_t h = hash(key);
        for (std::size_t i = h & mask(); ; i = (i + 1) & mask()) {
            const slot& s = slots_[i];
            if (!s.used) return nullptr;
            if (s.hash == h && s.key == key) return &s.value;
        }
    }
    Value* find(std::string_view key) { return const_cast<Value*>(static_cast<const subject_table&>(*this).find(key)); }

    // The value for `key`, inserted value-initialised when absent.
    Value& operator[](std::string_view key) {
        if ((size_ + 1) * 2 > slots_.size()) grow();
        const std::uint64_t h = hash(key);
        std::size_t i = h & mask();
        for (; slots_[i].used; i = (i + 1) & mask()) {
            if (slots_[i].hash == h && slots_[i].key == key) return slots_[i].value;
        }
        slots_[i].used = true;
        slots_[i].hash = h;
        slots_[i].key.assign(key);
        slots_[i].value = Value{};
        ++size_;
        return slots_[i].value;
    }

    bool erase(std::string_view key) {
        const std::uint64_t h = hash(key);
        std::size_t i = h & mask();
        for (;; i = (i + 1) & mask()) {
            if (!slots_[i].used) return false;
            if (slots_[i].hash == h && slots_[i].key == key) break;
        }
        // Backward-shift deletion: move later entries of the probe run into the hole.
        for (std::size_t j = (i + 1) & mask();; j = (j + 1) & mask()) {
            if (!slots_[j].used) break;
            const std::size_t home = slots_[j].hash & mask();
            const bool movable = (j > i) ? (home <= i || home > j) : (home <= i && home > j);
            if (movable) {
                slots_[i] = std::move(slots_[j]);
                i = j;
            }
        }
        slots_[i] = slot{};
        --size_;
        return true;
    }

    // Starts loading the memory a lookup of `key` will read, so that its cache misses overlap
    // with other work (and other tables' misses) instead of stalling the lookup.
    void prefetch(std::string_view key) const { prefetch_object(slots_[hash(key) & mask()]); }

    std::size_t size() const { return size_; }

    template <typename Fn>
    void for_each(Fn fn) const {
        for (const auto& s : slots_)
            if (s.used) fn(std::string_view(s.key), s.value);
    }

private:
    struct slot {
        std::uint64_t hash = 0;
        std::string key;
        Value value{};
        bool used = false;
    };
    static std::uint64_t hash(std::string_view key) { return std::hash<std::string_view>{}(key); }
    std::size_t mask() const { return slots_.size() - 1; }
    void grow() {
        std::vector<slot> old(slots_.size() * 2);
        old.swap(slots_);
        size_ = 0;
        for (auto& s : old) {
            if (!s.used) continue;
            std::size_t i = s.hash & mask();
            while (slots_[i].used) i = (i + 1) & mask();
            slots_[i] = std::move(s);
            ++size_;
        }
    }

    std::vector<slot> slots_;
    std::size_t size_ = 0;
};

} // namespace gdpr
