// The Python-facing Header object: one parsed file, shared by the bindings.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "header.hpp"
#include "hash.hpp"

namespace pyaudit {

// One parsed file. Holds the header text; tensor names and shapes are made into
// Python objects only when asked for. Used under the GIL only.
class Header {
public:
    Header(std::string path, ParsedHeader parsed)
        : path_(std::move(path)), parsed_(std::make_shared<ParsedHeader>(std::move(parsed))) {}
    Header(std::string path, std::shared_ptr<const ParsedHeader> parsed)
        : path_(std::move(path)), parsed_(std::move(parsed)) {}

    const std::string& path() const noexcept { return path_; }
    const ParsedHeader& parsed() const noexcept { return *parsed_; }

    // A seeded hash of the header text, computed on first use.
    std::uint64_t digest() const noexcept {
        if (!digest_) digest_ = parsed_->has_digest ? parsed_->digest : hash_bytes(parsed_->text);
        return *digest_;
    }

private:
    std::string path_;
    std::shared_ptr<const ParsedHeader> parsed_;
    mutable std::optional<std::uint64_t> digest_;
};

}  // namespace pyaudit
