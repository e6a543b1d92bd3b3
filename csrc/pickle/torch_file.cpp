#include "pickle/torch_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <unordered_map>
#include <utility>

#include "checked.hpp"
#include "file_io.hpp"
#include "pickle/pickle_vm.hpp"
#include "pickle/zip.hpp"

namespace pyaudit::pickle {
namespace {

// torch dtypes: the name torch pickles (torch.<name>), its legacy storage class,
// pyaudit's spelling (safetensors' where it has one) and the element size.
struct DtypeRow {
    std::string_view torch;
    std::string_view storage;
    std::string_view name;
    std::uint32_t size;
};

constexpr std::array<DtypeRow, 28> kDtypes{{
    {"float64", "DoubleStorage", "F64", 8},
    {"float32", "FloatStorage", "F32", 4},
    {"float16", "HalfStorage", "F16", 2},
    {"bfloat16", "BFloat16Storage", "BF16", 2},
    {"int64", "LongStorage", "I64", 8},
    {"int32", "IntStorage", "I32", 4},
    {"int16", "ShortStorage", "I16", 2},
    {"int8", "CharStorage", "I8", 1},
    {"uint8", "ByteStorage", "U8", 1},
    {"bool", "BoolStorage", "BOOL", 1},
    {"complex64", "ComplexFloatStorage", "C64", 8},
    {"complex128", "ComplexDoubleStorage", "C128", 16},
    {"complex32", "ComplexHalfStorage", "C32", 4},
    {"qint8", "QInt8Storage", "QINT8", 1},
    {"quint8", "QUInt8Storage", "QUINT8", 1},
    {"qint32", "QInt32Storage", "QINT32", 4},
    {"quint4x2", "QUInt4x2Storage", "QUINT4X2", 1},
    {"quint2x4", "QUInt2x4Storage", "QUINT2X4", 1},
    {"float8_e4m3fn", "", "F8_E4M3", 1},
    {"float8_e5m2", "", "F8_E5M2", 1},
    {"float8_e4m3fnuz", "", "F8_E4M3FNUZ", 1},
    {"float8_e5m2fnuz", "", "F8_E5M2FNUZ", 1},
    {"float8_e8m0fnu", "", "F8_E8M0", 1},
    {"uint16", "", "U16", 2},
    {"uint32", "", "U32", 4},
    {"uint64", "", "U64", 8},
    {"float4_e2m1fn_x2", "", "F4_X2", 1},
    {"bits8", "", "BITS8", 1},
}};

const DtypeRow* dtype_by_torch(std::string_view name) noexcept {
    for (const auto& row : kDtypes) {
        if (row.torch == name) return &row;
    }
    return nullptr;
}

const DtypeRow* dtype_by_storage(std::string_view name) noexcept {
    for (const auto& row : kDtypes) {
        if (!row.storage.empty() && row.storage == name) return &row;
    }
    return nullptr;
}

constexpr std::string_view kDcpMetadata = "torch.distributed.checkpoint.metadata";
constexpr std::string_view kDcpFilesystem = "torch.distributed.checkpoint.filesystem";

// Names this reader understands as data. Everything else is reported.
bool recognised(std::string_view module, std::string_view name) noexcept {
    if (module == "collections") return name == "OrderedDict";
    if (module == "torch._utils") {
        return name == "_rebuild_tensor" || name == "_rebuild_tensor_v2" || name == "_rebuild_tensor_v3" ||
               name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state";
    }
    if (module == "torch._tensor") return name == "_rebuild_from_type_v2" || name == "Tensor";
    if (module == "torch.nn.parameter") return name == "Parameter";
    if (module == "torch.storage") return name == "UntypedStorage";
    if (module == "torch.serialization") return name == "_get_layout";
    if (module == "torch") {
        if (name == "Size" || name == "device" || name == "UntypedStorage" || name == "Tensor") return true;
        if (name == "strided" || name == "sparse_coo" || name == "contiguous_format" ||
            name == "channels_last" || name == "preserve_format") {
            return true;
        }
        return dtype_by_torch(name) != nullptr || dtype_by_storage(name) != nullptr;
    }
    if (module == kDcpMetadata) {
        return name == "Metadata" || name == "TensorStorageMetadata" || name == "BytesStorageMetadata" ||
               name == "ChunkStorageMetadata" || name == "TensorProperties" || name == "MetadataIndex" ||
               name == "StorageMeta" || name == "_MEM_FORMAT_ENCODING";
    }
    if (module == kDcpFilesystem) return name == "_StorageInfo";
    if (module == "pathlib") {
        return name == "PosixPath" || name == "WindowsPath" || name == "PurePosixPath" || name == "PureWindowsPath";
    }
    if (module == "_codecs") return name == "encode";  // how protocol 2 spells bytes
    if (module == "builtins" || module == "__builtin__") {
        return name == "set" || name == "frozenset" || name == "bytearray" || name == "complex";
    }
    return false;
}

std::string upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    }
    return out;
}

// The tree of one or more pickles, read as data.
class Interpreter {
public:
    Interpreter(const Pickle& p, TorchFile& out) : p_(p), out_(out) {}

    void problem(TorchRule rule, std::string tensor, std::string message) {
        if (out_.problems.size() >= kMaxProblems) {
            ++out_.problems_dropped;
            return;
        }
        out_.problems.push_back(Problem{rule, std::move(tensor), std::move(message)});
    }

    const Node* node(std::uint32_t id) const { return id < p_.nodes.size() ? &p_.nodes[id] : nullptr; }

    bool is_global(std::uint32_t id, std::string_view module, std::string_view name) const {
        const Node* n = node(id);
        return n != nullptr && n->kind == Kind::global && n->text == module && n->name == name;
    }
    // The global a call node calls, or null.
    const Node* callee(std::uint32_t id) const {
        const Node* n = node(id);
        if (n == nullptr || n->kind != Kind::call) return nullptr;
        const Node* c = node(n->callee);
        return c != nullptr && c->kind == Kind::global ? c : nullptr;
    }
    bool calls(std::uint32_t id, std::string_view module, std::string_view name) const {
        const Node* c = callee(id);
        return c != nullptr && c->text == module && c->name == name;
    }
    const std::vector<std::uint32_t>* tuple(std::uint32_t id) const {
        const Node* n = node(id);
        if (n == nullptr || (n->kind != Kind::tuple && n->kind != Kind::list)) return nullptr;
        return p_.items(id);
    }
    const std::vector<std::uint32_t>* args(std::uint32_t call_id) const {
        const Node* n = node(call_id);
        return n == nullptr ? nullptr : tuple(n->args);
    }
    bool uint(std::uint32_t id, std::uint64_t& v) const {
        const Node* n = node(id);
        if (n == nullptr || n->kind != Kind::integer || n->number < 0) return false;
        v = static_cast<std::uint64_t>(n->number);
        return true;
    }
    bool str(std::uint32_t id, std::string_view& s) const {
        const Node* n = node(id);
        if (n == nullptr || n->kind != Kind::string) return false;
        s = n->text;
        return true;
    }
    // A shape: a tuple of non-negative ints, or torch.Size(tuple).
    bool dims(std::uint32_t id, std::vector<std::uint64_t>& out) const {
        if (calls(id, "torch", "Size")) {
            const auto* a = args(id);
            if (a == nullptr || a->size() != 1) return false;
            id = (*a)[0];
        }
        const auto* items = tuple(id);
        if (items == nullptr) {
            const Node* n = node(id);
            if (n != nullptr && n->kind == Kind::tuple) {  // empty tuple
                out.clear();
                return true;
            }
            return false;
        }
        out.clear();
        out.reserve(items->size());
        for (const std::uint32_t item : *items) {
            std::uint64_t v = 0;
            if (!uint(item, v)) return false;
            out.push_back(v);
        }
        return true;
    }
    // A dataclass-like object's field: from its BUILD state (a dict, or (dict, slots)).
    std::uint32_t field(std::uint32_t obj, std::string_view name) const {
        const Node* n = node(obj);
        if (n == nullptr) return kNoNode;
        std::uint32_t state = n->state;
        const Node* s = node(state);
        if (s != nullptr && s->kind == Kind::tuple) {
            const auto* parts = p_.items(state);
            if (parts != nullptr && parts->size() == 2) {
                const std::uint32_t found = dict_get((*parts)[1], name);
                if (found != kNoNode) return found;
                state = (*parts)[0];
            }
        }
        return dict_get(state, name);
    }
    std::uint32_t dict_get(std::uint32_t dict, std::string_view key) const {
        const auto* items = p_.items(dict);
        if (items == nullptr) return kNoNode;
        for (std::size_t i = 0; i + 1 < items->size(); i += 2) {
            std::string_view k;
            if (str((*items)[i], k) && k == key) return (*items)[i + 1];
        }
        return kNoNode;
    }

    // --- tensors -------------------------------------------------------------------

    // Is this node a tensor torch would rebuild? Fills `t` (not its name) when it is.
    // Recognised rebuild calls with arguments torch never writes are problems.
    bool tensor(std::uint32_t id, const std::string& name, TensorEntry& t, int depth = 0) {
        const Node* c = callee(id);
        if (c == nullptr || depth > 4) return false;
        const auto* a = args(id);
        if (c->text == "torch._utils" && (c->name == "_rebuild_parameter" || c->name == "_rebuild_parameter_with_state")) {
            if (a == nullptr || a->empty()) return bad(name, "a parameter rebuild without its tensor");
            return tensor((*a)[0], name, t, depth + 1) || bad(name, "a parameter rebuild of something not a tensor");
        }
        if (c->text == "torch._tensor" && c->name == "_rebuild_from_type_v2") {
            // (func, new_type, args, state): func(*args) is the tensor.
            if (a == nullptr || a->size() < 3) return bad(name, "_rebuild_from_type_v2 without its arguments");
            return rebuild((*a)[0], (*a)[2], name, t) || bad(name, "_rebuild_from_type_v2 of something not a tensor");
        }
        if (c->text == "torch._utils" && (c->name == "_rebuild_tensor" || c->name == "_rebuild_tensor_v2" ||
                                          c->name == "_rebuild_tensor_v3")) {
            return rebuild(p_.nodes[id].callee, p_.nodes[id].args, name, t);
        }
        return false;
    }

    bool bad(const std::string& name, std::string message) {
        problem(TorchRule::bad_tensor, name, std::move(message));
        return false;
    }

    bool rebuild(std::uint32_t func, std::uint32_t args_id, const std::string& name, TensorEntry& t) {
        const Node* f = node(func);
        if (f == nullptr || f->kind != Kind::global || f->text != "torch._utils") return false;
        const bool v3 = f->name == "_rebuild_tensor_v3";
        if (f->name != "_rebuild_tensor" && f->name != "_rebuild_tensor_v2" && !v3) return false;
        const auto* a = tuple(args_id);
        if (a == nullptr || a->size() < 4 || (v3 && a->size() < 7)) {
            return bad(name, std::string(f->name) + " with too few arguments");
        }
        std::uint32_t storage = 0;
        std::uint64_t extra_offset = 0;
        if (!storage_of((*a)[0], name, storage, extra_offset)) return false;
        StorageEntry& s = out_.storages[storage];
        t.storage = storage;
        std::uint32_t esize = s.element_size;
        t.dtype = s.dtype;
        if (v3) {
            const Node* d = node((*a)[6]);
            const DtypeRow* row = d != nullptr && d->kind == Kind::global && d->text == "torch" ? dtype_by_torch(d->name) : nullptr;
            if (row == nullptr) return bad(name, "_rebuild_tensor_v3 with a dtype torch does not have");
            t.dtype = std::string(row->name);
            esize = row->size;
        }
        if (!uint((*a)[1], t.storage_offset) || !dims((*a)[2], t.shape) || !dims((*a)[3], t.stride)) {
            return bad(name, "a tensor whose offset, size or stride is not a tuple of non-negative integers");
        }
        if (t.shape.size() != t.stride.size()) return bad(name, "a tensor whose size and stride differ in rank");
        if (!checked_add(t.storage_offset, extra_offset, t.storage_offset)) return bad(name, "a storage offset that overflows");
        // The elements the tensor reaches: offset + 1 + sum((size - 1) * stride), none when empty.
        std::uint64_t reach = 0;
        bool empty = false;
        bool overflow = false;
        std::uint64_t last = t.storage_offset;
        for (std::size_t i = 0; i < t.shape.size(); ++i) {
            if (t.shape[i] == 0) empty = true;
            std::uint64_t step = 0;
            if (t.shape[i] > 0 && (!checked_mul(t.shape[i] - 1, t.stride[i], step) || !checked_add(last, step, last))) {
                overflow = true;
            }
        }
        if (!empty && !overflow && (!checked_add(last, 1, reach) || !checked_mul(reach, esize, reach))) overflow = true;
        if (overflow) return bad(name, "a tensor whose extent overflows 64 bits");
        t.needed_bytes = empty ? 0 : reach;
        if (t.needed_bytes > s.needed_bytes) s.needed_bytes = t.needed_bytes;
        if (t.needed_bytes > s.nbytes) {
            problem(TorchRule::tensor_out_of_bounds, name,
                    "tensor '" + name + "' reaches byte " + std::to_string(t.needed_bytes) + " of storage '" + s.key +
                        "', which holds " + std::to_string(s.nbytes));
        }
        return true;
    }

    // ('storage', storage_type, key, location, numel[, view_metadata]) as a persistent id.
    bool storage_of(std::uint32_t id, const std::string& name, std::uint32_t& index, std::uint64_t& extra_offset) {
        const Node* n = node(id);
        if (n == nullptr || n->kind != Kind::persistent_id) return bad(name, "a tensor rebuilt from something not a storage");
        const auto* pid = tuple(n->callee);
        std::string_view tag, key, location;
        std::uint64_t numel = 0;
        if (pid == nullptr || pid->size() < 5 || !str((*pid)[0], tag) || tag != "storage" || !str((*pid)[2], key) ||
            !uint((*pid)[4], numel)) {
            return bad(name, "a storage persistent id that is not ('storage', type, key, location, numel)");
        }
        if (!str((*pid)[3], location)) location = "";
        const Node* type = node((*pid)[1]);
        const DtypeRow* row = nullptr;
        bool untyped = false;
        if (type != nullptr && type->kind == Kind::global && type->text == "torch") row = dtype_by_storage(type->name);
        if (type != nullptr && type->kind == Kind::global && type->name == "UntypedStorage" &&
            (type->text == "torch" || type->text == "torch.storage")) {
            untyped = true;
        }
        if (row == nullptr && !untyped) {
            const std::string what = type != nullptr && type->kind == Kind::global
                                         ? std::string(type->text) + "." + std::string(type->name)
                                         : std::string("a value that is not a global");
            problem(TorchRule::unknown_storage_type, name, "storage '" + std::string(key) + "' has type " + what);
            return false;
        }
        // Legacy view storages: (view_key, offset, size) of a root storage.
        if (pid->size() >= 6) {
            const auto* view = tuple((*pid)[5]);
            if (view != nullptr && view->size() == 3) {
                if (!uint((*view)[1], extra_offset)) return bad(name, "a storage view whose offset is not an integer");
            }
        }
        const auto found = by_key_.find(std::string(key));
        if (found != by_key_.end()) {
            index = found->second;
            StorageEntry& s = out_.storages[index];
            if (s.numel != numel || (untyped ? "U8" : std::string(row->name)) != s.dtype) {
                return bad(name, "storage '" + s.key + "' is described twice, differently");
            }
            return true;
        }
        StorageEntry s;
        s.key = std::string(key);
        s.location = std::string(location);
        s.dtype = untyped ? "U8" : std::string(row->name);
        s.element_size = untyped ? 1 : row->size;
        s.numel = numel;
        if (!checked_mul(numel, s.element_size, s.nbytes)) return bad(name, "storage '" + s.key + "' overflows 64 bits");
        index = static_cast<std::uint32_t>(out_.storages.size());
        by_key_.emplace(s.key, index);
        out_.storages.push_back(std::move(s));
        return true;
    }

    // Every tensor reachable from `root` through dicts, lists, tuples and object state,
    // named by the path of keys. Bounded: nesting, and visits (a memo can share one
    // container many times over).
    void collect(std::uint32_t root) {
        budget_ = 4 * p_.nodes.size() + 4096;
        std::string path;
        visit(root, path, 0);
    }

    std::size_t budget_ = 0;
    bool budget_spent_ = false;
    bool too_deep_ = false;
    bool too_long_ = false;

    void visit(std::uint32_t id, std::string& path, int depth) {
        if (budget_spent_) return;
        if (budget_ == 0) {
            budget_spent_ = true;
            return;
        }
        --budget_;
        const Node* n = node(id);
        if (n == nullptr) return;
        if (depth > kMaxNesting) {
            if (!too_deep_) problem(TorchRule::pickle_limit, path, "containers nest deeper than 100 levels (or form a cycle); not followed");
            too_deep_ = true;
            return;
        }
        if (n->kind == Kind::call) {
            TensorEntry t;
            if (callee(id) != nullptr && tensor(id, path, t)) {
                t.name = path;
                out_.tensors.push_back(std::move(t));
                return;
            }
            ValueEntry v;
            if (calls(id, "torch", "Size") && dims(id, v.dims)) {
                v.is_size = true;
                value(path, std::move(v));
                return;
            }
            // Enum(value) and the like: a call of one integer is recorded as that integer.
            const auto* a = args(id);
            if (a != nullptr && a->size() == 1 && node((*a)[0])->kind == Kind::integer && p_.items(id) == nullptr) {
                v.is_int = true;
                v.number = node((*a)[0])->number;
                value(path, std::move(v));
            }
        } else if (n->kind == Kind::integer || n->kind == Kind::boolean) {
            ValueEntry v;
            v.is_int = true;
            v.number = n->number;
            value(path, std::move(v));
            return;
        } else if (n->kind == Kind::string && n->text.size() <= kMaxValueText) {
            ValueEntry v;
            v.text = std::string(n->text);
            value(path, std::move(v));
            return;
        }
        const auto* items = p_.items(id);
        if (items != nullptr) {
            if (n->kind == Kind::dict || n->kind == Kind::call) {  // a call's items: SETITEMS on an OrderedDict
                for (std::size_t i = 0; i + 1 < items->size(); i += 2) {
                    std::string key;
                    if (!key_text((*items)[i], key)) continue;
                    descend((*items)[i + 1], path, key, depth);
                }
            } else if (n->kind == Kind::list || n->kind == Kind::tuple) {
                for (std::size_t i = 0; i < items->size(); ++i) descend((*items)[i], path, std::to_string(i), depth);
            }
        }
        // An object's state (BUILD): its fields are named like dict keys.
        if (n->state != kNoNode) visit(n->state, path, depth + 1);
    }

    void value(const std::string& path, ValueEntry v) {
        if (out_.values.size() >= kMaxValues) return;
        v.path = path;
        out_.values.push_back(std::move(v));
    }

    void descend(std::uint32_t id, std::string& path, const std::string& key, int depth) {
        if (path.size() + key.size() > kMaxName) {
            if (!too_long_) problem(TorchRule::pickle_limit, "", "a tensor name would be longer than 65,536 bytes; not followed");
            too_long_ = true;
            return;
        }
        const std::size_t before = path.size();
        if (!path.empty()) path += '.';
        path += key;
        visit(id, path, depth + 1);
        path.resize(before);
    }

    bool key_text(std::uint32_t id, std::string& out) const {
        const Node* n = node(id);
        if (n == nullptr) return false;
        if (n->kind == Kind::string) {
            out.assign(n->text);
            return true;
        }
        if (n->kind == Kind::integer) {
            out = std::to_string(n->number);
            return true;
        }
        return false;
    }

    // --- torch.distributed.checkpoint ------------------------------------------------

    bool dcp(std::uint32_t root) {
        if (!calls(root, kDcpMetadata, "Metadata")) return false;
        out_.is_dcp = true;
        const std::uint32_t sdm = field(root, "state_dict_metadata");
        const Node* table = node(sdm);
        if (table == nullptr || (table->kind != Kind::dict && table->kind != Kind::call)) {
            problem(TorchRule::bad_tensor, "", "DCP metadata without a state_dict_metadata table");
            return true;
        }
        static const std::vector<std::uint32_t> kNone;
        const auto* entries = p_.items(sdm) != nullptr ? p_.items(sdm) : &kNone;
        for (std::size_t i = 0; i + 1 < entries->size() && out_.dcp_entries.size() < (1u << 24); i += 2) {
            DcpEntry e;
            std::string_view fqn;
            if (!str((*entries)[i], fqn)) continue;
            e.fqn = std::string(fqn);
            const std::uint32_t md = (*entries)[i + 1];
            if (calls(md, kDcpMetadata, "BytesStorageMetadata")) {
                out_.dcp_entries.push_back(std::move(e));
                continue;
            }
            if (!calls(md, kDcpMetadata, "TensorStorageMetadata")) {
                problem(TorchRule::bad_tensor, e.fqn, "DCP entry '" + e.fqn + "' is neither tensor nor bytes metadata");
                continue;
            }
            e.is_tensor = true;
            const std::uint32_t props = field(md, "properties");
            std::uint32_t dtype = kNoNode;
            const Node* pn = node(props);
            if (pn != nullptr) {
                const Node* st = node(pn->state);
                if (st != nullptr && st->kind == Kind::tuple && p_.items(pn->state) != nullptr && !p_.items(pn->state)->empty()) {
                    dtype = (*p_.items(pn->state))[0];  // TensorProperties.__getstate__: (dtype, layout, ...)
                } else {
                    dtype = field(props, "dtype");
                }
            }
            const Node* dn = node(dtype);
            const DtypeRow* row = dn != nullptr && dn->kind == Kind::global && dn->text == "torch" ? dtype_by_torch(dn->name) : nullptr;
            if (row != nullptr) e.dtype = std::string(row->name);
            else if (dn != nullptr && dn->kind == Kind::global) e.dtype = upper(dn->name);
            if (!dims(field(md, "size"), e.shape)) {
                problem(TorchRule::bad_tensor, e.fqn, "DCP entry '" + e.fqn + "' has no size");
            }
            const auto* chunks = p_.items(field(md, "chunks"));
            if (chunks != nullptr) {
                for (const std::uint32_t chunk : *chunks) {
                    DcpChunk ch;
                    if (!dims(field(chunk, "offsets"), ch.offsets) || !dims(field(chunk, "sizes"), ch.sizes)) {
                        problem(TorchRule::bad_tensor, e.fqn, "a chunk of DCP entry '" + e.fqn + "' has no offsets or sizes");
                        continue;
                    }
                    e.chunks.push_back(std::move(ch));
                }
            }
            out_.dcp_entries.push_back(std::move(e));
        }
        const auto* items = p_.items(field(root, "storage_data"));
        if (items != nullptr) {
            for (std::size_t i = 0; i + 1 < items->size() && out_.dcp_items.size() < (1u << 24); i += 2) {
                DcpItem item;
                const std::uint32_t index = (*items)[i];
                const std::uint32_t info = (*items)[i + 1];
                std::string_view s;
                if (str(field(index, "fqn"), s)) item.fqn = std::string(s);
                (void)dims(field(index, "offset"), item.chunk_offset);
                if (str(field(info, "relative_path"), s)) item.relative_path = std::string(s);
                const bool numbers = uint(field(info, "offset"), item.offset) && uint(field(info, "length"), item.length);
                if (item.relative_path.empty() || !numbers) {
                    problem(TorchRule::bad_tensor, item.fqn, "a DCP storage entry for '" + item.fqn + "' without file, offset or length");
                    continue;
                }
                out_.dcp_items.push_back(std::move(item));
            }
        }
        return true;
    }

private:
    const Pickle& p_;
    TorchFile& out_;
    std::unordered_map<std::string, std::uint32_t> by_key_;
};

void add_problem(TorchFile& out, TorchRule rule, std::string tensor, std::string message) {
    if (out.problems.size() >= kMaxProblems) {
        ++out.problems_dropped;
        return;
    }
    out.problems.push_back(Problem{rule, std::move(tensor), std::move(message)});
}

void fail(TorchFile& out, TorchRule rule, std::string message) {
    if (out.issue.rule != TorchRule::ok) return;
    out.issue.rule = rule;
    out.issue.message = std::move(message);
}

TorchRule walk_rule(WalkRule r) noexcept {
    switch (r) {
    case WalkRule::ok: return TorchRule::ok;
    case WalkRule::truncated: return TorchRule::pickle_truncated;
    case WalkRule::malformed: return TorchRule::pickle_malformed;
    case WalkRule::limit: return TorchRule::pickle_limit;
    case WalkRule::unsupported: return TorchRule::pickle_unsupported;
    }
    return TorchRule::pickle_malformed;
}

TorchRule zip_rule(ZipStatus s) noexcept {
    switch (s) {
    case ZipStatus::ok: return TorchRule::ok;
    case ZipStatus::not_zip: return TorchRule::not_torch;
    case ZipStatus::truncated: return TorchRule::zip_truncated;
    case ZipStatus::malformed: return TorchRule::zip_malformed;
    case ZipStatus::unsupported: return TorchRule::zip_unsupported;
    case ZipStatus::io_error: return TorchRule::io_error;
    case ZipStatus::overlap: return TorchRule::zip_overlap;
    }
    return TorchRule::zip_malformed;
}

// Every global the pickle names, with how often: also of a pickle whose walk failed part
// way (the nodes before the failure are kept), since an unpickler would have imported and
// called what came before the broken opcode.
void tally_globals(const Pickle& p, TorchFile& out) {
    std::map<std::pair<std::string_view, std::string_view>, std::uint32_t> counts;
    for (const Node& n : p.nodes) {
        if (n.kind == Kind::global) ++counts[{n.text, n.name}];
    }
    out.globals.clear();
    for (const auto& [key, count] : counts) {
        out.globals.push_back(GlobalEntry{std::string(key.first), std::string(key.second), count,
                                          recognised(key.first, key.second)});
    }
}

void interpret(const Pickle& pickle, std::uint32_t root, TorchFile& out) {
    Interpreter in(pickle, out);
    if (!in.dcp(root)) {
        in.collect(root);
        if (in.budget_spent_) {
            fail(out, TorchRule::pickle_limit, "the pickle shares containers so often that naming its tensors would not end");
        }
    }
    tally_globals(pickle, out);
}

void read_zip(Source& source, TorchFile& out) {
    out.kind = "zip";
    ZipDirectory dir;
    const ZipResult z = read_zip_directory(source, dir);
    if (z.status != ZipStatus::ok) return fail(out, zip_rule(z.status), z.message);
    out.zip_records = static_cast<std::uint32_t>(dir.entries.size());
    // torch names every record "<archive>/<name>"; the archive is the first record's directory.
    const ZipEntry* data_pkl = nullptr;
    for (const ZipEntry& e : dir.entries) {
        const std::size_t slash = e.name.find('/');
        if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) {
            data_pkl = &e;
            out.archive = e.name.substr(0, slash);
            break;
        }
    }
    if (data_pkl == nullptr) return fail(out, TorchRule::not_torch, "a zip archive without <archive>/data.pkl: not a torch checkpoint");
    if (data_pkl->flags & 1) return fail(out, TorchRule::zip_unsupported, "data.pkl is encrypted");
    if (data_pkl->method != 0) return fail(out, TorchRule::zip_unsupported, "data.pkl is compressed (torch writes it stored)");
    if (data_pkl->compressed > kMaxPickleBytes) {
        return fail(out, TorchRule::pickle_limit, "data.pkl is " + std::to_string(data_pkl->compressed) + " bytes, over the 128 MiB limit");
    }
    std::uint64_t at = 0;
    const ZipResult r = record_data_offset(source, *data_pkl, at);
    if (r.status != ZipStatus::ok) return fail(out, zip_rule(r.status), r.message);
    std::vector<unsigned char> bytes(static_cast<std::size_t>(data_pkl->compressed));
    if (!source.read(at, bytes.size(), bytes.data())) return fail(out, TorchRule::io_error, source.why());
    out.pickle_offset = at;
    out.pickle_size = bytes.size();
    Pickle pickle;
    const WalkResult w = pickle.walk(bytes.data(), bytes.size());
    out.protocol = w.protocol;
    if (w.rule != WalkRule::ok) {
        tally_globals(pickle, out);
        return fail(out, walk_rule(w.rule), "data.pkl: " + w.message);
    }
    interpret(pickle, w.root, out);
    // Each storage's record: present, stored, and as long as the storage.
    std::unordered_map<std::string_view, const ZipEntry*> records;
    const std::string prefix = out.archive + "/data/";
    for (const ZipEntry& e : dir.entries) {
        if (e.name.size() > prefix.size() && e.name.compare(0, prefix.size(), prefix) == 0) {
            records.emplace(std::string_view(e.name).substr(prefix.size()), &e);
        }
    }
    auto first_tensor = [&](std::uint32_t index) {
        for (const TensorEntry& t : out.tensors) {
            if (t.storage == index) return t.name;
        }
        return std::string();
    };
    for (std::uint32_t i = 0; i < out.storages.size(); ++i) {
        StorageEntry& s = out.storages[i];
        const auto it = records.find(s.key);
        if (it == records.end()) {
            add_problem(out, TorchRule::storage_missing, first_tensor(i), "storage record '" + prefix + s.key + "' is missing");
            continue;
        }
        const ZipEntry& e = *it->second;
        s.present = true;
        s.record_size = e.uncompressed;
        if (e.method != 0 || (e.flags & 1)) {
            add_problem(out, TorchRule::storage_compressed, first_tensor(i),
                        "storage record '" + e.name + "' is compressed or encrypted");
            s.record_size = e.compressed;
        }
        if (s.record_size < s.nbytes) {
            add_problem(out, TorchRule::storage_truncated, first_tensor(i),
                        "storage record '" + e.name + "' holds " + std::to_string(s.record_size) +
                            " bytes; its storage needs " + std::to_string(s.nbytes));
        }
    }
}

// The legacy magic number 0x1950a86a20f9469cfc6c, as LONG1 pickles it.
constexpr unsigned char kLegacyMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

// A plain pickle or the legacy format: the pickles are at the start of the file. They
// are read from a prefix that grows (x4) while the walk runs out of bytes.
void read_pickles(Source& source, TorchFile& out) {
    const std::uint64_t file_size = source.size();
    const std::uint64_t cap = std::min<std::uint64_t>(file_size, kMaxPickleBytes);
    std::uint64_t have = std::min<std::uint64_t>(cap, 64 * 1024);
    std::vector<unsigned char> bytes;
    for (;;) {
        bytes.resize(static_cast<std::size_t>(have));
        if (!source.read(0, bytes.size(), bytes.data())) return fail(out, TorchRule::io_error, source.why());
        out = TorchFile{};
        out.file_size = file_size;
        Pickle pickle;
        std::size_t at = 0;
        WalkResult first = pickle.walk(bytes.data(), bytes.size());
        const auto retry = [&](const WalkResult& w) { return w.rule == WalkRule::truncated && have < cap; };
        if (retry(first)) {
            have = std::min<std::uint64_t>(cap, have * 4);
            continue;
        }
        out.protocol = first.protocol;
        if (first.rule != WalkRule::ok) {
            out.kind = "pickle";
            tally_globals(pickle, out);
            if (first.rule == WalkRule::truncated && have < file_size) {
                return fail(out, TorchRule::pickle_limit, "the pickle is longer than the 128 MiB limit");
            }
            return fail(out, walk_rule(first.rule), first.message);
        }
        const Node& r = pickle.nodes[first.root];
        const bool legacy = r.kind == Kind::big_integer && r.text.size() == sizeof kLegacyMagic &&
                            std::memcmp(r.text.data(), kLegacyMagic, sizeof kLegacyMagic) == 0;
        if (!legacy) {
            out.kind = "pickle";
            out.pickle_size = first.end;
            interpret(pickle, first.root, out);
            return;
        }
        out.kind = "legacy";
        at = first.end;
        // protocol version, sys_info, the object, the storage keys.
        std::array<std::uint32_t, 4> roots{};
        bool grow = false;
        for (std::size_t k = 0; k < roots.size(); ++k) {
            const WalkResult w = pickle.walk(bytes.data() + at, bytes.size() - at);
            if (retry(w)) {
                grow = true;
                break;
            }
            if (w.rule != WalkRule::ok) {
                tally_globals(pickle, out);
                static const char* const what[] = {"protocol version", "sys_info", "object", "storage keys"};
                return fail(out, walk_rule(w.rule), std::string("legacy ") + what[k] + " pickle: " + w.message);
            }
            if (k == 2) {
                out.pickle_offset = at;
                out.pickle_size = w.end;
                out.protocol = w.protocol;
            }
            roots[k] = w.root;
            at += w.end;
        }
        if (grow) {
            have = std::min<std::uint64_t>(cap, have * 4);
            continue;
        }
        const Node& version = pickle.nodes[roots[0]];
        if (version.kind != Kind::integer || version.number != 1001) {
            return fail(out, TorchRule::legacy_malformed, "the legacy protocol version is not 1001");
        }
        interpret(pickle, roots[2], out);
        // Raw storages follow the keys list, in its order: an 8-byte element count, then the bytes.
        const auto* keys = pickle.items(roots[3]);
        if (pickle.nodes[roots[3]].kind != Kind::list) {
            return fail(out, TorchRule::legacy_malformed, "the legacy storage keys are not a list");
        }
        std::unordered_map<std::string_view, std::uint32_t> by_key;
        for (std::uint32_t i = 0; i < out.storages.size(); ++i) by_key.emplace(out.storages[i].key, i);
        std::uint64_t pos = at;
        bool ended = false;
        for (std::size_t k = 0; keys != nullptr && k < keys->size(); ++k) {
            const Node& key = pickle.nodes[(*keys)[k]];
            const auto it = key.kind == Kind::string ? by_key.find(key.text) : by_key.end();
            if (it == by_key.end()) {
                return fail(out, TorchRule::legacy_malformed,
                            "legacy storage key " + std::to_string(k) + " names no storage of the pickle");
            }
            StorageEntry& s = out.storages[it->second];
            if (ended) continue;
            unsigned char count[8];
            if (file_size - pos < 8 || !source.read(pos, 8, count)) {
                ended = true;
                continue;
            }
            std::uint64_t numel = 0;
            for (int b = 7; b >= 0; --b) numel = (numel << 8) | count[b];
            std::uint64_t nbytes = 0;
            if (!checked_mul(numel, s.element_size, nbytes)) {
                return fail(out, TorchRule::legacy_malformed, "legacy storage '" + s.key + "' claims an impossible size");
            }
            if (numel != s.numel) {
                return fail(out, TorchRule::legacy_malformed,
                            "legacy storage '" + s.key + "' holds " + std::to_string(numel) + " elements; the pickle says " +
                                std::to_string(s.numel));
            }
            s.present = true;
            pos += 8;
            s.record_size = std::min<std::uint64_t>(nbytes, file_size - pos);
            pos += s.record_size;
            if (s.record_size < nbytes) ended = true;
        }
        for (std::uint32_t i = 0; i < out.storages.size(); ++i) {
            StorageEntry& s = out.storages[i];
            if (s.present && s.record_size >= s.nbytes) continue;
            std::string tensor;
            for (const TensorEntry& t : out.tensors) {
                if (t.storage == i) {
                    tensor = t.name;
                    break;
                }
            }
            add_problem(out, s.present ? TorchRule::storage_truncated : TorchRule::storage_missing, tensor,
                                    "legacy storage '" + s.key + "' " +
                                        (s.present ? "holds " + std::to_string(s.record_size) + " of its " +
                                                         std::to_string(s.nbytes) + " bytes"
                                                   : std::string("is missing: the file ends before it")));
        }
        return;
    }
}

}  // namespace

std::string_view torch_rule_code(TorchRule rule) noexcept {
    switch (rule) {
    case TorchRule::ok: return "ok";
    case TorchRule::io_error: return "io-error";
    case TorchRule::not_torch: return "not-torch";
    case TorchRule::zip_truncated: return "zip-truncated";
    case TorchRule::zip_malformed: return "zip-malformed";
    case TorchRule::zip_overlap: return "zip-overlap";
    case TorchRule::zip_unsupported: return "zip-unsupported";
    case TorchRule::pickle_truncated: return "pickle-truncated";
    case TorchRule::pickle_malformed: return "pickle-malformed";
    case TorchRule::pickle_limit: return "pickle-limit";
    case TorchRule::pickle_unsupported: return "pickle-unsupported";
    case TorchRule::legacy_tar: return "legacy-tar";
    case TorchRule::legacy_malformed: return "legacy-malformed";
    case TorchRule::storage_missing: return "storage-missing";
    case TorchRule::storage_truncated: return "storage-truncated";
    case TorchRule::storage_compressed: return "storage-compressed";
    case TorchRule::tensor_out_of_bounds: return "tensor-out-of-bounds";
    case TorchRule::bad_tensor: return "bad-tensor";
    case TorchRule::unknown_storage_type: return "unknown-storage-type";
    }
    return "unknown";
}

TorchFile read_torch(Source& source) {
    TorchFile out;
    out.file_size = source.size();
    // The first 8 bytes say which format; the tar check (at byte 257) only when they do not.
    unsigned char first[512] = {};
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.file_size, 8));
    if (n == 0) {
        fail(out, TorchRule::not_torch, "the file is empty");
    } else if (!source.read(0, n, first)) {
        fail(out, TorchRule::io_error, source.why());
    } else if (starts_like_zip(first, n)) {
        read_zip(source, out);
    } else if (first[0] == 0x80 && n >= 2 && first[1] <= 5) {
        read_pickles(source, out);
    } else if (out.file_size >= 262 && source.read(0, 262, first) && std::memcmp(first + 257, "ustar", 5) == 0) {
        out.kind = "legacy";
        fail(out, TorchRule::legacy_tar, "torch's pre-0.4 tar format is not read");
    } else {
        fail(out, TorchRule::not_torch, "neither a torch zip checkpoint nor a pickle");
    }
    out.file_size = source.size();
    out.bytes_read = source.bytes_read();
    return out;
}

TorchFile parse_torch_bytes(const unsigned char* data, std::size_t size) {
    BufferSource source(data, size);
    return read_torch(source);
}

TorchFile read_torch_file(const std::string& path) {
    TorchFile out;
    const int raw = open_read_only(path.c_str());
    if (raw < 0) {
        fail(out, TorchRule::io_error, "cannot open: " + std::string(std::strerror(errno)));
        return out;
    }
    const FileDescriptor fd(raw);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        fail(out, TorchRule::io_error, "cannot stat: " + std::string(std::strerror(errno)));
        return out;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(out, TorchRule::io_error, "not a regular file");
        return out;
    }
    (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);
    FileSource source(fd.get(), static_cast<std::uint64_t>(st.st_size));
    return read_torch(source);
}

}  // namespace pyaudit::pickle
