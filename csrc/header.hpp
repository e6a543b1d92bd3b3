// The safetensors header: a strict parser and validator over header bytes.
//
// Knows the format and nothing about models. Every rule the reference loader
// (safetensors' read_metadata + validate) enforces is checked here, plus two it
// does not: duplicate tensor names and Git LFS pointer files. Whatever else the
// reference accepts is accepted, serde's rarer spellings included: a tensor entry
// written as the array [dtype, shape, data_offsets], a dtype as {"F32": null}.
// Failures are values (FormatIssue), never exceptions, and every number taken
// from a header is used only through checked arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dtype.hpp"

namespace pyaudit {

inline constexpr std::uint64_t kLengthPrefix = 8;
inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;  // as the reference
inline constexpr int kMaxJsonDepth = 128;                      // as serde_json

enum class Rule : std::uint8_t {
    ok,
    io_error,          // the file could not be opened or read
    too_small,         // shorter than the 8-byte length prefix
    lfs_pointer,       // a Git LFS pointer, not the weights
    header_too_large,  // length prefix over 100,000,000
    header_truncated,  // length prefix over the file
    not_utf8,
    not_json,          // syntax, nesting deeper than 128, trailing characters
    wrong_type,        // a value of the wrong type, a missing or duplicate field
    bad_metadata,      // __metadata__ not a string -> string map
    unknown_dtype,
    bad_number,        // negative, fractional or out-of-range shape/offset number
    duplicate_tensor,
    overflow,          // shape product x dtype bits overflows 64 bits
    misaligned,        // shape x dtype bits not a whole number of bytes
    extent_mismatch,   // data_offsets extent != shape x dtype size
    offsets_reversed,  // end < begin
    offsets_gap,       // first tensor not at 0, or a hole between tensors
    offsets_overlap,
    data_truncated,    // file shorter than header + data section
    trailing_bytes,    // file longer than header + data section
};

std::string_view rule_code(Rule rule) noexcept;

struct FormatIssue {
    Rule rule = Rule::ok;
    std::string tensor;   // the tensor concerned, empty when none
    std::string message;  // names the rule (and the tensor) in words
};

// One tensor entry. Names and shapes refer back into the header text, so a
// header costs little beyond its own bytes whatever it claims.
struct TensorRecord {
    std::uint32_t name_offset = 0;  // into ParsedHeader::text, or escaped_names
    std::uint32_t name_length = 0;
    std::uint32_t shape_offset = 0;  // the JSON array text of the shape
    std::uint32_t shape_length = 0;
    std::uint32_t rank = 0;
    bool name_escaped = false;     // name_offset indexes escaped_names
    bool elements_overflow = false;
    Dtype dtype = Dtype::U8;
    std::uint64_t elements = 1;
    std::uint64_t begin = 0;
    std::uint64_t end = 0;
};

struct ParsedHeader {
    std::uint64_t file_size = 0;
    std::uint64_t header_size = 0;  // the length prefix (JSON bytes)
    std::uint64_t data_size = 0;    // bytes the tensors cover
    std::string text;               // the header JSON, owned
    std::vector<TensorRecord> tensors;  // in header order
    std::vector<std::string> escaped_names;
    bool has_metadata = false;
    std::vector<std::pair<std::string, std::string>> metadata;
    FormatIssue issue;  // rule == ok when the file is valid
    std::uint64_t digest = 0;  // hash_bytes(text), when has_digest (set by batch reads)
    bool has_digest = false;

    bool ok() const noexcept { return issue.rule == Rule::ok; }
    std::string_view name(const TensorRecord& t) const noexcept;
    std::vector<std::uint64_t> shape(const TensorRecord& t) const;
};

// Decodes the little-endian length prefix.
std::uint64_t read_length_prefix(const unsigned char* first8) noexcept;

// Is this the start of a Git LFS pointer file?
bool looks_like_lfs_pointer(const unsigned char* data, std::size_t size) noexcept;

// The bytes a file's header spans from its start (8 + the length prefix), when its first
// `size` bytes (`data`) announce a header the format allows and a file of `file_size`
// bytes can hold; 0 when they do not (too short, a Git LFS pointer, a length over the
// limit or over the file), and parse_header_prefix says why from those bytes alone.
// parse_header_prefix asks for more bytes (`needed`) exactly when this exceeds `size`.
std::uint64_t header_extent(const unsigned char* data, std::size_t size, std::uint64_t file_size) noexcept;

// Validates the header text of a file of file_size bytes whose length prefix
// said header_size == text.size(). Fills out.tensors / metadata / issue.
void parse_header_text(ParsedHeader& out);

// Whole-buffer entry point: `data` holds the first `size` bytes of a file of
// `file_size` bytes (the whole file, or a prefix holding at least the header).
// A prefix too short to hold the header it announces yields header_truncated
// when file_size says so, else `needed` is set to the prefix length required.
ParsedHeader parse_header_prefix(const unsigned char* data, std::size_t size,
                                 std::uint64_t file_size,
                                 std::uint64_t* needed = nullptr);

}  // namespace pyaudit
