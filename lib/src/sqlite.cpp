#include "gdpr/sqlite.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gdpr {

namespace {
[[noreturn]] void fail(sqlite3* db, const std::string& what) {
    throw storage_error(what + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}
} // namespace

sqlite_statement::sqlite_statement(sqlite3* db, std::string_view sql) : db_(db) {
    if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) !=
        SQLITE_OK)
        fail(db, "cannot prepare statement");
}

sqlite_statement::~sqlite_statement() { sqlite3_finalize(stmt_); }

sqlite_statement& sqlite_statement::bind(int index, std::string_view text) {
    if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT) != SQLITE_OK)
        fail(db_, "cannot bind a value");
    return *this;
}

sqlite_statement& sqlite_statement::bind(int index, std::int64_t value) {
    if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) fail(db_, "cannot bind a value");
    return *this;
}

sqlite_statement& sqlite_statement::bind_blob(int index, std::string_view bytes) {
    if (sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT) != SQLITE_OK)
        fail(db_, "cannot bind a value");
    return *this;
}

sqlite_statement& sqlite_statement::bind_static(int index, std::string_view text) {
    if (sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC) != SQLITE_OK)
        fail(db_, "cannot bind a value");
    return *this;
}

sqlite_statement& sqlite_statement::bind_blob_static(int index, std::string_view bytes) {
    if (sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_STATIC) != SQLITE_OK)
        fail(db_, "cannot bind a value");
    return *this;
}

sqlite_statement& sqlite_statement::bind_null(int index) {
    if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) fail(db_, "cannot bind a value");
    return *this;
}

bool sqlite_statement::step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const std::string message = sqlite3_errmsg(db_);
    sqlite3_reset(stmt_);
    throw storage_error("statement failed: " + message);
}

void sqlite_statement::run() {
    try {
        while (step()) {
        }
    } catch (...) {
        reset();  // no binding (possibly to memory about to go) outlives a failed run
        throw;
    }
    reset();
}

void sqlite_statement::reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

std::string sqlite_statement::text(int column) const {
    const auto* p = sqlite3_column_text(stmt_, column);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
             : std::string();
}

std::string sqlite_statement::blob(int column) const {
    const void* p = sqlite3_column_blob(stmt_, column);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
             : std::string();
}

std::int64_t sqlite_statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

bool sqlite_statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

sqlite_db::sqlite_db(const std::string& path, std::string_view synchronous) : path_(path) {
    // SQLite creates the file (and later its -wal and -shm files, with the same mode) using the
    // process umask; create it private first. An in-memory database has no file.
    if (path != ":memory:") {
        struct stat st {};
        int stat_rc = ::stat(path.c_str(), &st);
        if (stat_rc != 0 && errno == ENOENT) {
            // Only a file that did not exist is opened here: closing any descriptor of a file drops
            // every POSIX lock this process holds on it, the locks of the SQLite connections already
            // open on it included. Another process's connection would then take itself for the last
            // one and check the write-ahead log in and delete it under this process's writers.
            const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0 && errno != EEXIST)
                throw storage_error("cannot open or create database '" + path + "': " + std::strerror(errno));
            if (fd >= 0) ::close(fd);
            stat_rc = ::stat(path.c_str(), &st);
        }
        if (stat_rc != 0) throw storage_error("cannot open or create database '" + path + "': " + std::strerror(errno));
        if (!S_ISREG(st.st_mode)) throw storage_error("database '" + path + "' is not a regular file");
        // Checked without a descriptor (see above); SQLite would open an unwritable file read-only.
        if (::faccessat(AT_FDCWD, path.c_str(), R_OK | W_OK, AT_EACCESS) != 0)
            throw storage_error("cannot open database '" + path + "' for reading and writing: " + std::strerror(errno));
        if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
            char mode[8];
            std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
            throw storage_error("database '" + path + "' is accessible by group or others (mode " + mode +
                                "); it holds personal data: chmod 600 it");
        }
    }
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
        SQLITE_OK) {
        const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
        sqlite3_close(db_);
        db_ = nullptr;
        throw storage_error("cannot open database '" + path + "': " + message);
    }
    sqlite3_busy_timeout(db_, BUSY_TIMEOUT_MS);
    try {
        exec("PRAGMA page_size=32768");  // takes effect only in a new, empty database
        exec("PRAGMA journal_mode=WAL");
        exec("PRAGMA synchronous=" + std::string(synchronous));
        exec("PRAGMA foreign_keys=ON");
        // Every table here may hold personal data: deleted rows are overwritten, not left in
        // free pages (GDPR Art. 17).
        exec("PRAGMA secure_delete=ON");
    } catch (...) {
        sqlite3_close(db_);
        db_ = nullptr;
        throw;
    }
}

sqlite_db::sqlite_db(const std::string& path, read_only_t) : path_(path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
        const std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
        sqlite3_close(db_);
        db_ = nullptr;
        throw storage_error("cannot open database '" + path + "' for reading: " + message);
    }
    sqlite3_busy_timeout(db_, BUSY_TIMEOUT_MS);
}

int sqlite_db::changes() const { return sqlite3_changes(db_); }

bool sqlite_db::in_transaction() const { return sqlite3_get_autocommit(db_) == 0; }

sqlite_statement& sqlite_db::cached(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) it = statements_.emplace(sql, std::make_unique<sqlite_statement>(db_, sql)).first;
    it->second->reset();
    return *it->second;
}

sqlite_db::~sqlite_db() {
    if (!db_) return;
    statements_.clear();  // finalize before closing
    // Folding the log back is worth a moment, not the full busy timeout: behind another process's
    // transaction or reader, each connection of a stopping broker would wait 5 s in turn. What
    // stays in the log is folded back by a later checkpoint, or by the last connection to close.
    sqlite3_busy_timeout(db_, CLOSE_CHECKPOINT_WAIT_MS);
    sqlite3_exec(db_, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
    sqlite3_close_v2(db_);
}

void sqlite_db::exec(std::string_view sql) {
    char* err = nullptr;
    const std::string text(sql);
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        const std::string message = err ? err : sqlite3_errmsg(db_);
        sqlite3_free(err);
        throw storage_error("'" + path_ + "': " + message);
    }
}

sqlite_transaction::sqlite_transaction(sqlite_db& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

sqlite_transaction::~sqlite_transaction() {
    if (!done_) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void sqlite_transaction::commit() {
    db_.exec("COMMIT");
    done_ = true;
}

int check_schema_version(sqlite_db& db, std::string_view component, int version, std::string_view description) {
    db.exec("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)");
    sqlite_statement found(db.handle(), "SELECT version FROM schema_version WHERE component = ?1");
    found.bind(1, component);
    if (found.step()) {
        const auto stored = found.integer(0);
        if (stored > version)
            throw storage_error("'" + db.path() + "' was written by a newer version (" + std::string(description) + " " +
                                std::to_string(stored) + ", this plugin knows " + std::to_string(version) + ")");
        return static_cast<int>(stored);
    }
    found.reset();
    sqlite_statement insert(db.handle(), "INSERT INTO schema_version (component, version) VALUES (?1, ?2)");
    insert.bind(1, component).bind(2, std::int64_t{version});
    insert.run();
    return version;
}

} // namespace gdpr
