// What SQLite itself costs the audit writer per record, with one row per record (the trail as it
// is) and with N records packed into one row (a possible future trail format): the insert and
// commit, then the checkpoint that copies the write-ahead log into the database. The rows have
// the audit trail's columns and the sizes of a publish record (a ~250-byte detail, a ~300-byte
// sealed payload, a 32-byte hash); no sealing or hashing is done, so only SQLite is measured.
//
//   build/bench/segment_bench [--records N] [--per-row 1,8,64] [--dir DIR]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "gdpr/sqlite.hpp"

namespace {

double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct cost {
    double insert_us = 0;      // per record: inserts and commits
    double checkpoint_us = 0;  // per record: copying the log into the database
};

cost measure(const std::string& path, long records, long per_row, long per_transaction) {
    cost c;
    {
        gdpr::sqlite_db db(path);
        db.exec("PRAGMA secure_delete=ON");
        db.exec("PRAGMA cache_size=-16384");
        db.exec("PRAGMA wal_autocheckpoint=0");
        db.exec("CREATE TABLE audit_records(seq INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,"
                " expires_ms INTEGER NOT NULL, session INTEGER, client_id TEXT, schema TEXT, detail TEXT, payload BLOB,"
                " sealed BLOB, digest BLOB, hash BLOB NOT NULL)");
        auto& insert = db.cached(
            "INSERT INTO audit_records(seq, at_ms, kind, expires_ms, session, client_id, schema, detail, payload, sealed, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        const std::string detail(250, 'd'), sealed(300, 's'), hash(32, 'h');
        std::string packed_detail, packed_sealed;
        const double start = cpu_seconds();
        std::int64_t seq = 0;
        for (long done = 0; done < records;) {
            gdpr::sqlite_transaction tx(db);
            for (long in_tx = 0; in_tx < per_transaction && done < records; in_tx += per_row, done += per_row) {
                packed_detail.clear();
                packed_sealed.clear();
                for (long k = 0; k < per_row; ++k) {
                    packed_detail += detail;
                    packed_sealed += sealed;
                    packed_sealed += hash;  // a packed row would carry each record's link
                }
                const std::int64_t at = 1'795'460'000'000 + done;
                insert.bind(1, ++seq).bind(2, at).bind_static(3, "publish").bind(4, at + 30 * 86'400'000LL).bind(5, 7);
                insert.bind_static(6, "vehicle-17").bind_static(7, "vehicle@1").bind_static(8, packed_detail).bind_null(9);
                insert.bind_blob_static(10, packed_sealed).bind_blob_static(11, hash);
                insert.run();
            }
            tx.commit();
        }
        const double inserted = cpu_seconds();
        db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
        const double checkpointed = cpu_seconds();
        c.insert_us = (inserted - start) / static_cast<double>(records) * 1e6;
        c.checkpoint_us = (checkpointed - inserted) / static_cast<double>(records) * 1e6;
    }
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
    return c;
}

} // namespace

int main(int argc, char** argv) {
    long records = 500000;
    std::vector<long> per_row{1, 8, 64};
    std::string dir = std::filesystem::temp_directory_path().string();
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--records") records = std::atol(argv[i + 1]);
        else if (a == "--dir") dir = argv[i + 1];
        else if (a == "--per-row") {
            per_row.clear();
            std::stringstream list(argv[i + 1]);
            for (std::string n; std::getline(list, n, ',');) per_row.push_back(std::atol(n.c_str()));
        } else {
            std::fprintf(stderr, "usage: segment_bench [--records N] [--per-row 1,8,64] [--dir DIR]\n");
            return 2;
        }
    }
    for (long n : per_row) {
        if (n < 1 || records < n) {
            std::fprintf(stderr, "segment_bench: --per-row values must be between 1 and --records\n");
            return 2;
        }
        const std::string path = dir + "/segment_bench_" + std::to_string(::getpid()) + ".db";
        try {
            // Transactions of about 2,000 records, as the writer's at 10,000 records/s.
            const cost c = measure(path, records - records % n, n, 2000);
            std::printf("{\"records_per_row\":%ld,\"insert_us_per_record\":%.3f,\"checkpoint_us_per_record\":%.3f}\n", n,
                        c.insert_us, c.checkpoint_us);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "segment_bench: %s\n", e.what());
            return 1;
        }
    }
    return 0;
}
