#pragma once
// Thin RAII over SQLite: a connection, prepared statements, transactions. Errors throw
// gdpr::storage_error carrying SQLite's message; destructors never throw.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace gdpr {

class storage_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class sqlite_statement {
public:
    sqlite_statement(sqlite3* db, std::string_view sql);  // prepared once (SQLITE_PREPARE_PERSISTENT)
    ~sqlite_statement();
    sqlite_statement(const sqlite_statement&) = delete;
    sqlite_statement& operator=(const sqlite_statement&) = delete;

    // Binds by copy (SQLITE_TRANSIENT); `index` is 1-based.
    sqlite_statement& bind(int index, std::string_view text);
    sqlite_statement& bind(int index, std::int64_t value);
    sqlite_statement& bind_null(int index);
    sqlite_statement& bind_blob(int index, std::string_view bytes);
    // Without a copy: the bytes must stay valid and unchanged until the statement is reset.
    sqlite_statement& bind_static(int index, std::string_view text);
    sqlite_statement& bind_blob_static(int index, std::string_view bytes);
    // Steps once: true when a row is available, false when done. Throws on error.
    bool step();
    // Steps to completion and resets, for statements that return no rows.
    void run();
    void reset();  // resets and clears bindings
    std::string text(int column) const;
    std::string blob(int column) const;
    std::int64_t integer(int column) const;
    bool is_null(int column) const;

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
};

class sqlite_db {
public:
    // How long a statement waits for another connection's lock before it fails.
    static constexpr int BUSY_TIMEOUT_MS = 5000;
    // How long closing waits to fold the write-ahead log back into the database.
    static constexpr int CLOSE_CHECKPOINT_WAIT_MS = 200;
    // Opens (creating when missing) `path` in WAL mode with the given `synchronous` level.
    // The file is created mode 0600; an existing file readable or writable by group or others is
    // refused (it holds personal data).
    sqlite_db(const std::string& path, std::string_view synchronous = "NORMAL");
    // Opens an existing database for reading only (offline audit tools).
    struct read_only_t {};
    static constexpr read_only_t read_only{};
    sqlite_db(const std::string& path, read_only_t);
    ~sqlite_db();
    sqlite_db(const sqlite_db&) = delete;
    sqlite_db& operator=(const sqlite_db&) = delete;

    void exec(std::string_view sql);
    sqlite3* handle() const { return db_; }
    const std::string& path() const { return path_; }
    // False while a transaction is open (SQLite may end one by itself after an I/O error).
    bool in_transaction() const;
    // Rows changed by the last INSERT, UPDATE or DELETE.
    int changes() const;

    // The statement for `sql`, prepared on first use and kept for the connection's lifetime, reset
    // and with bindings cleared. Not thread-safe: use from the connection's own thread.
    sqlite_statement& cached(const std::string& sql);

private:
    sqlite3* db_ = nullptr;
    std::string path_;
    std::map<std::string, std::unique_ptr<sqlite_statement>> statements_;
};

// Records `version` for `component` in the schema_version table (created when missing) of a new
// database; throws storage_error naming the file when it was written by a newer version.
// `description` names the component in the message ("consent schema"). Returns the version the
// file holds (`version` when it was new): an older one is the caller's to upgrade.
int check_schema_version(sqlite_db& db, std::string_view component, int version, std::string_view description);

// Rolls back in its destructor unless committed.
class sqlite_transaction {
public:
    explicit sqlite_transaction(sqlite_db& db);
    ~sqlite_transaction();
    void commit();

private:
    sqlite_db& db_;
    bool done_ = false;
};

} // namespace gdpr
