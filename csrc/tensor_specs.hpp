// Named tensor specifications, and headers held against them.
//
// A table of names, each with what is known of it (a dtype, a shape, a group,
// whether it may be absent), matched against the tensors of one or more parsed
// headers in a single pass of hash lookups. The answer is counts: how many
// tensors the table knows, how many of its entries were seen, how many differ
// in dtype or shape, how many names repeat across the headers. Counts of zero
// say a set of files is exactly what the table describes without making a
// single object per tensor; anything else is for the caller to look into.
//
// Knows tensors and nothing about models: which names a model must hold is the
// caller's business.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtype.hpp"
#include "header.hpp"

namespace pyaudit {

struct TensorSpec {
    std::string name;
    std::optional<Dtype> dtype;                        // nullopt: not checked
    std::optional<std::vector<std::uint64_t>> shape;   // nullopt: not checked
    std::int64_t group = -1;                           // caller's label (e.g. a file)
    bool optional = false;                             // may be absent
};

struct SpecMatch {
    std::uint64_t tensors = 0;        // tensors in the headers
    std::uint64_t known = 0;          // whose name is in the table
    std::uint64_t required_seen = 0;  // distinct non-optional entries seen
    std::uint64_t optional_seen = 0;  // distinct optional entries seen
    std::uint64_t dtype_differs = 0;  // known tensors whose dtype differs from a stated one
    std::uint64_t shape_differs = 0;  // known tensors whose shape differs from a stated one
    std::uint64_t repeated = 0;       // known tensors whose name an earlier tensor had
    std::vector<std::uint64_t> in_group;  // per header: tensors whose entry's group is the header's
};

class TensorSpecs {
public:
    // A name given twice keeps its first spec.
    explicit TensorSpecs(std::vector<TensorSpec> specs);

    std::size_t size() const noexcept { return specs_.size(); }
    std::size_t required() const noexcept { return required_; }
    const TensorSpec& operator[](std::size_t i) const noexcept { return specs_[i]; }

    // Index of the entry named `name`, or -1.
    std::int64_t find(std::string_view name) const noexcept;

    // Holds the tensors of `headers` (valid ones; others are skipped) against the
    // table. `groups[i]`, when given, is header i's group for SpecMatch::in_group.
    SpecMatch match(const std::vector<const ParsedHeader*>& headers,
                    const std::vector<std::int64_t>& groups = {}) const;

private:
    // What a match reads of an entry, packed: names and shape texts live in one buffer
    // (strings_), so a lookup touches a slot, an entry and the bytes it compares.
    struct Entry {
        std::uint32_t name_offset = 0, name_length = 0;
        std::uint32_t shape_offset = 0, shape_length = 0;  // canonical "[a,b]" text
        std::uint64_t elements = 1;                        // product of the stated shape, saturated
        std::int64_t group = -1;
        std::uint32_t rank = 0;
        std::int16_t dtype = -1;  // -1: not stated
        bool has_shape = false;
        bool optional = false;
    };
    // Open addressing: the hash's high half as a tag (most probes end on it), entry + 1.
    struct Slot {
        std::uint32_t tag = 0;
        std::uint32_t entry = 0;  // 0: empty
    };

    std::string_view name_of(const Entry& e) const noexcept {
        return std::string_view(strings_).substr(e.name_offset, e.name_length);
    }
    bool same_shape(std::size_t index, const ParsedHeader& h, const TensorRecord& t) const;
    std::int64_t find(std::string_view name, std::uint64_t hash) const noexcept;

    std::vector<TensorSpec> specs_;
    std::vector<Entry> entries_;
    std::string strings_;
    std::vector<Slot> slots_;
    std::uint64_t mask_ = 0;
    std::size_t required_ = 0;
};

// Tensors (over valid headers, in order) whose name an earlier tensor had.
std::uint64_t count_repeated_names(const std::vector<const ParsedHeader*>& headers);

// Tensors (over valid headers) whose name contains `needle`.
std::uint64_t count_names_containing(const std::vector<const ParsedHeader*>& headers,
                                     std::string_view needle);

}  // namespace pyaudit
