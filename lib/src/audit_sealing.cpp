#include "gdpr/audit_sealing.hpp"

#include "gdpr/background_thread.hpp"

#include <utility>

#include <openssl/crypto.h>

namespace gdpr {

namespace {

void put_be32(std::string& out, std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out[at + i] = static_cast<char>(v >> (24 - 8 * i));
}

} // namespace

envelope_plan::~envelope_plan() { OPENSSL_cleanse(key.data(), key.size()); }

void chunk_plan::reset() {
    for (auto& e : envelopes) OPENSSL_cleanse(e.key.data(), e.key.size());
    envelopes.clear();
    size = 0;
}

record_plan& chunk_plan::add() {
    if (size == records.size()) records.emplace_back();
    record_plan& r = records[size++];
    r.view = record_view{};
    r.personal = {};
    r.first_envelope = envelopes.size();
    r.envelopes = 0;
    r.sealed.clear();
    return r;
}

chunk_plan::~chunk_plan() { reset(); }

sealing_stage::sealing_stage()
    : thread_([this] {
          become_background_thread("gdpr-seal");
          run();
      }) {}

sealing_stage::~sealing_stage() {
    {
        std::unique_lock<std::mutex> lock(mutex_);
        done_.wait(lock, [&] { return !busy_; });
        stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
}

void sealing_stage::submit(chunk_plan& plan) {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &plan;
    busy_ = true;
    error_ = nullptr;
    wake_.notify_one();
}

void sealing_stage::wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return !busy_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void sealing_stage::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || job_ != nullptr; });
        if (stopping_) return;
        chunk_plan* plan = std::exchange(job_, nullptr);
        lock.unlock();
        std::exception_ptr error;
        try {
            seal(*plan);
        } catch (...) {
            error = std::current_exception();
        }
        lock.lock();
        error_ = error;
        busy_ = false;
        done_.notify_all();
    }
}

void sealing_stage::seal(chunk_plan& plan) {
    struct forget_key_on_exit {
        sealing_stage& stage;
        ~forget_key_on_exit() {
            OPENSSL_cleanse(stage.sealer_key_.data(), stage.sealer_key_.size());
            stage.sealer_.reset();  // the context holds the key schedule
            stage.keyed_ = false;
        }
    } forget{*this};
    for (std::size_t i = 0; i < plan.size; ++i) {
        record_plan& r = plan.records[i];
        if (r.envelopes > 0) {
            r.sealed.reserve(r.envelopes * (ENVELOPE_REF_BYTES + 4 + gcm_sealer::OVERHEAD + r.personal.size()));
            for (std::size_t e = r.first_envelope; e < r.first_envelope + r.envelopes; ++e) {
                const envelope_plan& env = plan.envelopes[e];
                // Keyed by the key itself, not the subject: a shredded subject's next key differs.
                if (!sealer_) sealer_ = std::make_unique<gcm_sealer>(env.key);
                else if (!keyed_ || CRYPTO_memcmp(sealer_key_.data(), env.key.data(), env.key.size()) != 0)
                    sealer_->rekey(env.key);
                sealer_key_ = env.key;
                keyed_ = true;
                const std::string_view ref(env.ref.data(), env.ref.size());
                r.sealed.append(ref);
                const std::size_t len_at = r.sealed.size();
                r.sealed.append(4, '\0');
                envelope_aad_bytes aad;
                write_envelope_aad(r.view.seq, ref, aad);
                sealer_->seal(env.nonce, std::string_view(aad.data(), aad.size()), r.personal, r.sealed);
                put_be32(r.sealed, len_at, static_cast<std::uint32_t>(r.sealed.size() - len_at - 4));
            }
            r.view.sealed = std::string_view(r.sealed);
        }
        r.digest = content_digest(r.view);
    }
}

} // namespace gdpr
