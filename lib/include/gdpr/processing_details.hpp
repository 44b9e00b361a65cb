#pragma once
// What the record of processing activities (GDPR Art. 30(1)) must say that no schema or option
// can know: who the controller is and how to reach them, the categories of data subjects and of
// recipients, and the organisational measures. Given by the operator in one JSON file
// (plugin_opt_processing_details_file), read at start and at every schema reload.
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace gdpr {

struct party {
    std::string name;
    std::string contact;  // address, e-mail or telephone, as the controller publishes it
};

struct processing_details {
    // Schema ids map to what applies to that schema; "*" applies to every schema.
    static constexpr const char* EVERY_SCHEMA = "*";

    party controller;                          // Art. 30(1)(a)
    std::vector<party> joint_controllers;      // Art. 26
    std::optional<party> representative;       // Art. 27
    std::optional<party> data_protection_officer;  // Art. 37
    std::map<std::string, std::string> data_subjects;             // Art. 30(1)(c): who they are
    std::map<std::string, std::vector<std::string>> recipients;   // Art. 30(1)(d): categories
    std::vector<std::string> organisational_measures;             // Art. 30(1)(g), 32
    std::string file;

    // The data subjects of schema `id` (its own entry, else "*"'s); empty when none is given.
    std::string data_subjects_of(const std::string& id) const;
    // The categories of recipients of schema `id`: "*"'s and its own.
    std::vector<std::string> recipients_of(const std::string& id) const;
};

// Reads and checks the file. Throws schema_error naming the file and the JSON path: not an object,
// unknown keys (a misspelt key would silently leave a duty unmet), a controller without a name,
// blank texts, keys of dataSubjects and recipients that are neither a schema id nor "*".
processing_details load_processing_details(const std::string& path);

} // namespace gdpr
