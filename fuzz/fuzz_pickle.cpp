// libFuzzer harness: any bytes, as a whole file, through the torch checkpoint reader
// (zip directory, legacy framing, pickle walker, interpretation), and through the
// pickle walker alone. Every input must give a value, never a crash, hang, read out
// of bounds or unbounded allocation. Beyond that, what callers rely on:
//   - a failure names a known rule and says what broke;
//   - every tensor names a storage of the file, with shape and stride of one rank;
//   - a file without problems has every storage present and as long as its tensors need;
//   - reads stay bounded by the input (no read loops).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pickle/pickle_vm.hpp"
#include "pickle/torch_file.hpp"

namespace {

[[noreturn]] void broken() { __builtin_trap(); }

void require(bool condition) {
    if (!condition) broken();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace pyaudit::pickle;
    const TorchFile f = parse_torch_bytes(data, size);
    require(torch_rule_code(f.issue.rule) != "unknown");
    require(f.issue.rule == TorchRule::ok || !f.issue.message.empty());
    require(f.file_size == size);
    // 8 sniffed + two end-record windows + directory + local header + pickle prefixes (x4 growth).
    require(f.bytes_read <= 8 * static_cast<std::uint64_t>(size) + 200000);
    require(f.problems.size() <= kMaxProblems);
    for (const Problem& p : f.problems) {
        require(p.rule != TorchRule::ok && !p.message.empty());
        require(torch_rule_code(p.rule) != "unknown");
    }
    for (const TensorEntry& t : f.tensors) {
        require(t.storage < f.storages.size());
        require(t.shape.size() == t.stride.size());
    }
    if (f.issue.rule == TorchRule::ok && f.problems.empty() && f.kind != "pickle") {
        for (const StorageEntry& s : f.storages) {
            require(s.present);
            require(s.record_size >= s.nbytes);
            require(s.needed_bytes <= s.nbytes);
        }
    }
    for (const DcpItem& i : f.dcp_items) require(!i.relative_path.empty());

    // The walker alone, on the same bytes, from each of the first few offsets.
    for (std::size_t start = 0; start < size && start < 4; ++start) {
        Pickle pickle;
        const WalkResult w = pickle.walk(data + start, size - start);
        require(w.end <= size - start);
        require(w.rule != WalkRule::ok || w.root < pickle.nodes.size());
        require(w.rule == WalkRule::ok || !w.message.empty());
        require(pickle.nodes.size() <= size - start + 1);  // at most one value per opcode byte
    }
    return 0;
}
