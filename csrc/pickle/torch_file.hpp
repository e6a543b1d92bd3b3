// torch checkpoints read as data: the zip format (archive/data.pkl + archive/data/<key>),
// the legacy format (magic, protocol, sys_info, pickle, storage keys, raw storages) and
// plain pickles (torch.distributed.checkpoint's .metadata).
//
// Reads the zip central directory and the pickle, never tensor data. The pickle is
// walked by pickle_vm (never executed) and its tree interpreted: the torch tensor
// rebuild functions and storage types, collections.OrderedDict and the
// torch.distributed.checkpoint metadata classes are recognised by name; any other
// global is reported, never called. Knows torch's file formats, nothing about models.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pickle/source.hpp"

namespace pyaudit::pickle {

inline constexpr std::uint64_t kMaxPickleBytes = 128ull << 20;  // data.pkl / .metadata / legacy prefix
inline constexpr std::size_t kMaxProblems = 1000;
inline constexpr int kMaxNesting = 100;
inline constexpr std::size_t kMaxName = 65536;  // bytes of one tensor's dotted name  // containers inside containers, as walked for names

enum class TorchRule : std::uint8_t {
    ok,
    io_error,              // cannot open/read
    not_torch,             // neither a torch zip, a legacy torch file nor a pickle
    zip_truncated,         // the zip's end record or a record lies past the end
    zip_malformed,         // bad signatures, impossible sizes
    zip_overlap,           // two records share bytes
    zip_unsupported,       // multi-disk, encrypted or compressed data.pkl
    pickle_truncated,      // the pickle ends early
    pickle_malformed,      // unknown opcode, stack underflow, bad memo index
    pickle_limit,          // too large, too deep, too many values
    pickle_unsupported,    // protocol > 5, out-of-band buffers
    legacy_tar,            // torch < 0.4 tar format
    legacy_malformed,      // legacy framing (magic, protocol, keys) wrong
    storage_missing,       // a tensor's storage record is absent
    storage_truncated,     // a storage record is shorter than its storage
    storage_compressed,    // a storage record is compressed (torch cannot load it)
    tensor_out_of_bounds,  // a tensor reaches past the end of its storage
    bad_tensor,            // a rebuild call whose arguments are not what torch writes
    unknown_storage_type,  // a storage type that is not torch's
};

std::string_view torch_rule_code(TorchRule rule) noexcept;

struct Problem {
    TorchRule rule = TorchRule::ok;
    std::string tensor;
    std::string message;
};

struct TensorEntry {
    std::string name;    // dotted path of dict keys / list indexes from the root
    std::string dtype;   // safetensors spelling (F32, BF16, ...) or the torch name upper-cased
    std::vector<std::uint64_t> shape;
    std::vector<std::uint64_t> stride;
    std::uint64_t storage_offset = 0;  // elements
    std::uint32_t storage = 0;         // index into TorchFile::storages
    std::uint64_t needed_bytes = 0;    // bytes of its storage the tensor reaches (from the storage start)
};

struct StorageEntry {
    std::string key;
    std::string dtype;               // of the storage type (U8 for untyped)
    std::uint32_t element_size = 1;
    std::uint64_t numel = 0;         // as the persistent id says
    std::uint64_t nbytes = 0;        // numel x element size
    std::string location;
    bool present = false;            // record found (zip) / raw storage read (legacy)
    std::uint64_t record_size = 0;   // bytes present
    std::uint64_t needed_bytes = 0;  // the most any tensor reaches
};

struct GlobalEntry {
    std::string module;
    std::string name;
    std::uint32_t count = 0;
    bool recognised = false;
};

struct DcpChunk {
    std::vector<std::uint64_t> offsets;
    std::vector<std::uint64_t> sizes;
};

struct DcpEntry {
    std::string fqn;
    bool is_tensor = false;  // false: BytesStorageMetadata
    std::string dtype;
    std::vector<std::uint64_t> shape;
    std::vector<DcpChunk> chunks;
};

struct DcpItem {  // one storage_data entry: MetadataIndex -> _StorageInfo
    std::string fqn;
    std::vector<std::uint64_t> chunk_offset;
    std::string relative_path;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

// A plain value the pickle holds beside its tensors (ints, short strings, torch.Size),
// by the same dotted path: how DeepSpeed records its world size and parameter shapes.
struct ValueEntry {
    std::string path;
    bool is_int = false;
    std::int64_t number = 0;
    std::string text;
    bool is_size = false;  // torch.Size: dims holds it
    std::vector<std::uint64_t> dims;
};

inline constexpr std::size_t kMaxValues = 1u << 20;
inline constexpr std::size_t kMaxValueText = 256;

struct TorchFile {
    std::string kind;  // "zip", "legacy", "pickle", "" (not read)
    std::uint64_t file_size = 0;
    std::string archive;             // zip: the record prefix ("archive")
    std::uint64_t pickle_offset = 0;
    std::uint64_t pickle_size = 0;
    int protocol = 0;
    std::uint64_t bytes_read = 0;
    std::uint32_t zip_records = 0;
    std::vector<TensorEntry> tensors;
    std::vector<StorageEntry> storages;
    std::vector<GlobalEntry> globals;
    std::vector<ValueEntry> values;
    bool is_dcp = false;
    std::vector<DcpEntry> dcp_entries;
    std::vector<DcpItem> dcp_items;
    Problem issue;                  // fatal: rule != ok means the tables may be partial or empty
    std::vector<Problem> problems;  // per tensor / storage, the file otherwise read
    std::size_t problems_dropped = 0;

    bool ok() const noexcept { return issue.rule == TorchRule::ok && problems.empty(); }
};

// Never throws for a bad file: the result carries what went wrong.
TorchFile read_torch(Source& source);
TorchFile read_torch_file(const std::string& path);
TorchFile parse_torch_bytes(const unsigned char* data, std::size_t size);

}  // namespace pyaudit::pickle
