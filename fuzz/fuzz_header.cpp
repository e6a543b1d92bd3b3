// libFuzzer harness: any bytes, as a whole file, through the header parser.
// The parser must return a value (ok or an issue) for every input: never crash,
// hang, read out of bounds or allocate more than the input. Beyond that, the
// harness checks what a caller relies on:
//   - a failure names a rule and says what broke, in valid UTF-8;
//   - a valid header's tensors have unique, valid UTF-8 names, shapes of their
//     rank, extents of exactly shape x dtype bytes, and tile [0, data_size),
//     and the file is exactly prefix + header + data;
//   - reading a short prefix first and the rest of the header afterwards (as
//     read_header_file does) gives the same verdict as the whole buffer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "checked.hpp"
#include "hash.hpp"
#include "header.hpp"
#include "tensor_specs.hpp"
#include "utf8.hpp"

namespace {

[[noreturn]] void broken() { __builtin_trap(); }

void require(bool condition) {
    if (!condition) broken();
}

bool valid_utf8(std::string_view s) {
    return pyaudit::first_invalid_utf8(reinterpret_cast<const unsigned char*>(s.data()), s.size()) ==
           s.size();
}

void check_valid(const pyaudit::ParsedHeader& parsed, std::size_t size) {
    std::uint64_t total = 0;
    require(pyaudit::checked_add(pyaudit::kLengthPrefix, parsed.header_size, total));
    require(pyaudit::checked_add(total, parsed.data_size, total));
    require(total == size);
    require(parsed.text.size() == parsed.header_size);

    std::unordered_set<std::string_view> names;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> extents;
    for (const pyaudit::TensorRecord& t : parsed.tensors) {
        const std::string_view name = parsed.name(t);
        require(valid_utf8(name));
        require(names.insert(name).second);  // unique
        require(name != "__metadata__");
        const std::vector<std::uint64_t> dims = parsed.shape(t);
        require(dims.size() == t.rank);
        std::uint64_t bits = pyaudit::dtype_bits(t.dtype);
        std::uint64_t elements = 1;
        for (const std::uint64_t d : dims) require(pyaudit::checked_mul(elements, d, elements));
        require(!t.elements_overflow && elements == t.elements);
        require(pyaudit::checked_mul(elements, bits, bits));
        require(bits % 8 == 0);
        require(t.begin <= t.end && t.end - t.begin == bits / 8);
        extents.emplace_back(t.begin, t.end);
    }
    std::sort(extents.begin(), extents.end());
    std::uint64_t cursor = 0;
    for (const auto& [begin, end] : extents) {
        require(begin == cursor);
        cursor = end;
    }
    require(cursor == parsed.data_size);

    std::unordered_set<std::string_view> keys;
    for (const auto& [key, value] : parsed.metadata) {
        require(valid_utf8(key) && valid_utf8(value));
        require(keys.insert(key).second);
    }
    require(parsed.has_metadata || parsed.metadata.empty());
}

void check_failure(const pyaudit::ParsedHeader& parsed) {
    require(!parsed.issue.message.empty());  // every failure says what broke
    require(valid_utf8(parsed.issue.message));
    require(valid_utf8(parsed.issue.tensor));
    require(pyaudit::rule_code(parsed.issue.rule) != "unknown");
}

// A valid header held against a table of its own tensors is exactly that table;
// against the same table with every other shape changed, exactly those differ.
void check_specs(const pyaudit::ParsedHeader& parsed) {
    std::vector<pyaudit::TensorSpec> own;
    std::vector<pyaudit::TensorSpec> changed;
    std::uint64_t reshaped = 0;
    for (std::size_t i = 0; i < parsed.tensors.size(); ++i) {
        const pyaudit::TensorRecord& t = parsed.tensors[i];
        pyaudit::TensorSpec spec;
        spec.name = std::string(parsed.name(t));
        spec.dtype = t.dtype;
        spec.shape = parsed.shape(t);
        spec.group = static_cast<std::int64_t>(i % 2);
        own.push_back(spec);
        if (i % 2 == 1) {
            spec.shape->push_back(1);  // one more dimension: never the same shape
            ++reshaped;
        }
        spec.optional = i % 3 == 2;
        changed.push_back(std::move(spec));
    }
    const std::vector<const pyaudit::ParsedHeader*> one{&parsed};
    const pyaudit::TensorSpecs table(std::move(own));
    const std::uint64_t n = parsed.tensors.size();
    const pyaudit::SpecMatch m = table.match(one, {0});
    require(table.size() == n && m.tensors == n && m.known == n && m.required_seen == n);
    require(m.dtype_differs == 0 && m.shape_differs == 0 && m.repeated == 0);
    require(m.in_group.size() == 1 && m.in_group[0] == (n + 1) / 2);
    const pyaudit::SpecMatch c = pyaudit::TensorSpecs(std::move(changed)).match(one);
    require(c.known == n && c.shape_differs == reshaped && c.dtype_differs == 0);
    require(c.required_seen + c.optional_seen == n);
    const std::vector<const pyaudit::ParsedHeader*> twice{&parsed, &parsed};
    require(pyaudit::count_repeated_names(twice) == n);
    require(table.match(twice).repeated == n);
}

// read_header_file's two-step read: a short first read, then the rest of the header.
pyaudit::ParsedHeader parse_in_two_reads(const std::uint8_t* data, std::size_t size, std::size_t first) {
    first = std::min(first, size);
    std::uint64_t needed = 0;
    pyaudit::ParsedHeader out = pyaudit::parse_header_prefix(data, first, size, &needed);
    // header_extent (what read_header_file decides by) asks for more exactly when this does.
    const std::uint64_t extent = pyaudit::header_extent(data, first, size);
    require(needed == (extent > first ? extent : 0));
    if (needed == 0) return out;
    require(needed <= size && needed > first);
    require(out.issue.rule == pyaudit::Rule::ok && out.header_size + pyaudit::kLengthPrefix == needed);
    out.text.assign(reinterpret_cast<const char*>(data) + pyaudit::kLengthPrefix,
                    static_cast<std::size_t>(out.header_size));
    pyaudit::parse_header_text(out);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const pyaudit::ParsedHeader parsed = pyaudit::parse_header_prefix(data, size, size);
    if (parsed.ok()) {
        check_valid(parsed, size);
        check_specs(parsed);
    } else {
        check_failure(parsed);
    }

    // The same file read in two steps, with a first read that cuts the header.
    const std::size_t first = size > 24 ? 24 + (data[size - 1] % 64) : size;
    const pyaudit::ParsedHeader twice = parse_in_two_reads(data, size, first);
    require(twice.issue.rule == parsed.issue.rule);
    // (An LFS pointer's message quotes its oid and size, which a cut first read
    // may not hold; read_header_file's first read is 32 KiB, the whole pointer.)
    require(twice.issue.message == parsed.issue.message || parsed.issue.rule == pyaudit::Rule::lfs_pointer);
    require(twice.issue.tensor == parsed.issue.tensor);
    require(twice.tensors.size() == parsed.tensors.size());
    require(twice.data_size == parsed.data_size);
    require(parsed.text != twice.text || pyaudit::hash_bytes(parsed.text) == pyaudit::hash_bytes(twice.text));
    return 0;
}
