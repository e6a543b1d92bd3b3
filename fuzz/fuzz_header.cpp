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
#include "header.hpp"
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

// read_header_file's two-step read: a short first read, then the rest of the header.
pyaudit::ParsedHeader parse_in_two_reads(const std::uint8_t* data, std::size_t size, std::size_t first) {
    first = std::min(first, size);
    std::uint64_t needed = 0;
    pyaudit::ParsedHeader out = pyaudit::parse_header_prefix(data, first, size, &needed);
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
    return 0;
}
