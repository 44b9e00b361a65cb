#include <catch2/catch.hpp>

#include "gdpr/subject_quota.hpp"

using gdpr::subject_quota;
using namespace std::chrono_literals;

TEST_CASE("each client may bring in a burst of new subjects, then the per-minute rate", "[quota]") {
    subject_quota q(60, 5);  // one a second after a burst of five
    const auto t0 = subject_quota::clock::time_point{} + 1h;
    CHECK(q.limited());
    CHECK(q.take("van-1", 3, t0));
    CHECK(q.take("van-1", 2, t0));
    CHECK_FALSE(q.take("van-1", 1, t0));  // the burst is spent
    CHECK(q.refused() == 1);
    CHECK(q.take("van-2", 5, t0));  // another client has its own allowance
    CHECK_FALSE(q.take("van-2", 1, t0 + 500ms));
    CHECK(q.take("van-1", 1, t0 + 1s));  // refilled at the rate
    CHECK_FALSE(q.take("van-1", 1, t0 + 1500ms));
    // A publish bringing more than is left is refused whole, and takes nothing.
    CHECK_FALSE(q.take("van-1", 3, t0 + 3s));
    CHECK(q.take("van-1", 2, t0 + 3s));
    CHECK(q.refused() == 4);
    // Refilling stops at the burst.
    CHECK_FALSE(q.take("van-1", 6, t0 + 1h));
    CHECK(q.take("van-1", 5, t0 + 1h));
    CHECK(q.take("van-1", 0, t0 + 1h));  // nothing new costs nothing
}

TEST_CASE("a burst larger than the allowance is never admitted, and no limit admits everything", "[quota]") {
    subject_quota q(10, 20);
    const auto t0 = subject_quota::clock::time_point{} + 1h;
    CHECK_FALSE(q.take("gateway", 21, t0));
    CHECK(q.take("gateway", 20, t0));
    subject_quota smooth(600, 1);  // no burst: one every 100 ms
    CHECK(smooth.take("gateway", 1, t0));
    CHECK_FALSE(smooth.take("gateway", 1, t0 + 50ms));
    CHECK(smooth.take("gateway", 1, t0 + 100ms));
    subject_quota none(0, 1);
    CHECK_FALSE(none.limited());
    CHECK(none.take("gateway", 1000000, t0));
    CHECK(none.clients_tracked() == 0);
}

TEST_CASE("clients whose allowance has refilled are forgotten", "[quota]") {
    subject_quota q(60, 10);
    const auto t0 = subject_quota::clock::time_point{} + 1h;
    for (int i = 0; i < 1000; ++i) REQUIRE(q.take("device-" + std::to_string(i), 1, t0));
    CHECK(q.clients_tracked() == 1000);
    CHECK(q.take("device-0", 1, t0 + 2min));  // a minute later: the full ones are dropped first
    CHECK(q.clients_tracked() == 1);
    // A forgotten client starts again with a full allowance, as it would have had anyway.
    CHECK(q.take("device-1", 10, t0 + 2min));
    q.prune(t0 + 2min + 61s);  // 61 s on, both have refilled (one a second): forgotten
    CHECK(q.clients_tracked() == 0);
    CHECK(q.take("gateway", 10, t0 + 5min));
    q.prune(t0 + 5min + 2s);   // within the minute since the last prune: nothing happens
    CHECK(q.clients_tracked() == 1);
    q.prune(t0 + 6min + 5s);   // 65 s on it has refilled 10 of 10: forgotten
    CHECK(q.clients_tracked() == 0);
    // A client still drawing is kept: forgetting it would hand it a fresh burst.
    subject_quota slow(1, 10);  // one a minute
    CHECK(slow.take("gateway", 10, t0));
    slow.prune(t0 + 5min);      // five of ten back: still drawing
    CHECK(slow.clients_tracked() == 1);
    CHECK_FALSE(slow.take("gateway", 6, t0 + 5min));
    CHECK(slow.take("gateway", 5, t0 + 5min));
}
