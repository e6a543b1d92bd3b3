// libFuzzer harness: any bytes, as a whole file, through the header parser.
// The parser must return a value (ok or an issue) for every input: never crash,
// hang, read out of bounds or allocate more than the input.
#include <cstddef>
#include <cstdint>

#include "header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const pyaudit::ParsedHeader parsed = pyaudit::parse_header_prefix(data, size, size);
    if (parsed.ok()) {
        // A valid header's accessors must agree with what was validated.
        std::uint64_t covered = 0;
        for (const pyaudit::TensorRecord& t : parsed.tensors) {
            const auto name = parsed.name(t);
            const auto dims = parsed.shape(t);
            if (dims.size() != t.rank) __builtin_trap();
            if (t.end < t.begin || t.end > parsed.data_size) __builtin_trap();
            covered += t.end - t.begin;
            (void)name;
        }
        if (covered != parsed.data_size) __builtin_trap();
        if (8 + parsed.header_size + parsed.data_size != size) __builtin_trap();
    } else if (parsed.issue.message.empty()) {
        __builtin_trap();  // every failure says what broke
    }
    return 0;
}
