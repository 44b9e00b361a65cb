#pragma once
// A small set of interned holder numbers (client ids, topics) for one data subject. Nearly every
// subject has one to three holders per role, and the broker checks them on every publish and
// delivery of that subject's data, for hundreds of thousands of subjects: the first few live
// inside the set itself, so the check reads the subject's entry and no other memory.
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace gdpr {

class holder_set {
public:
    static constexpr std::size_t INLINE = 3;

    holder_set() = default;
    holder_set(holder_set&&) noexcept = default;
    holder_set& operator=(holder_set&&) noexcept = default;

    bool contains(std::uint32_t id) const {
        for (std::uint8_t i = 0; i < inline_count_; ++i)
            if (inline_[i] == id) return true;
        return more_ && std::find(more_->begin(), more_->end(), id) != more_->end();
    }

    // False when the id was already there.
    bool insert(std::uint32_t id) {
        if (contains(id)) return false;
        if (inline_count_ < INLINE) {
            inline_[inline_count_++] = id;
        } else {
            if (!more_) more_ = std::make_unique<std::vector<std::uint32_t>>();
            more_->push_back(id);
        }
        return true;
    }

    void erase(std::uint32_t id) {
        for (std::uint8_t i = 0; i < inline_count_; ++i) {
            if (inline_[i] != id) continue;
            // Keep the inline part full while overflow holds ids, so contains() stays a short scan.
            if (more_ && !more_->empty()) {
                inline_[i] = more_->back();
                more_->pop_back();
            } else {
                inline_[i] = inline_[--inline_count_];
            }
            return;
        }
        if (more_) more_->erase(std::remove(more_->begin(), more_->end(), id), more_->end());
    }

    std::size_t size() const { return inline_count_ + (more_ ? more_->size() : 0); }
    bool empty() const { return size() == 0; }

    template <typename Fn>
    void for_each(Fn fn) const {
        for (std::uint8_t i = 0; i < inline_count_; ++i) fn(inline_[i]);
        if (more_)
            for (const std::uint32_t id : *more_) fn(id);
    }

private:
    std::array<std::uint32_t, INLINE> inline_{};
    std::uint8_t inline_count_ = 0;
    std::unique_ptr<std::vector<std::uint32_t>> more_;
};

} // namespace gdpr
