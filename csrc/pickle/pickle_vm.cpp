#include "pickle/pickle_vm.hpp"

#include <cstring>
#include <unordered_map>
#include <utility>

namespace pyaudit::pickle {
namespace {

std::uint64_t read_le(const unsigned char* p, std::size_t n) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    return v;
}

class Walker {
public:
    Walker(Pickle& pickle, const unsigned char* data, std::size_t size)
        : p_(pickle), data_(data), size_(size) {}

    WalkResult run() {
        for (;;) {
            if (pos_ >= size_) return fail(WalkRule::truncated, "the pickle ends before its STOP opcode");
            const unsigned char op = data_[pos_++];
            if (!step(op)) return result_;
            if (stopped_) {
                result_.end = pos_;
                result_.protocol = protocol_;
                return result_;
            }
        }
    }

private:
    Pickle& p_;
    const unsigned char* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
    int protocol_ = 0;
    bool stopped_ = false;
    std::vector<std::uint32_t> stack_;
    std::vector<std::size_t> marks_;
    std::unordered_map<std::uint64_t, std::uint32_t> memo_;
    WalkResult result_;

    WalkResult fail(WalkRule rule, std::string message) {
        result_.rule = rule;
        result_.message = std::move(message) + " (at byte " + std::to_string(pos_) + ")";
        return result_;
    }
    bool error(WalkRule rule, std::string message) {
        fail(rule, std::move(message));
        return false;
    }

    bool take(std::size_t n, const unsigned char*& out) {
        if (n > size_ - pos_) return error(WalkRule::truncated, "the pickle ends inside an opcode's argument");
        out = data_ + pos_;
        pos_ += n;
        return true;
    }
    // A protocol 0 argument: the bytes up to the next newline (not included).
    bool line(std::string_view& out) {
        const void* nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
        if (nl == nullptr) return error(WalkRule::truncated, "the pickle ends inside a text argument");
        const auto* end = static_cast<const unsigned char*>(nl);
        out = std::string_view(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(end - (data_ + pos_)));
        pos_ = static_cast<std::size_t>(end - data_) + 1;
        return true;
    }

    bool add(Node node, std::uint32_t& id) {
        if (p_.nodes.size() >= kMaxNodes) return error(WalkRule::limit, "the pickle makes more than 4,194,304 values");
        id = static_cast<std::uint32_t>(p_.nodes.size());
        p_.nodes.push_back(node);
        return true;
    }
    bool push_id(std::uint32_t id) {
        if (stack_.size() >= kMaxStack) return error(WalkRule::limit, "the pickle stack grows past 1,048,576 items");
        stack_.push_back(id);
        return true;
    }
    bool push(Node node) {
        std::uint32_t id = 0;
        return add(node, id) && push_id(id);
    }
    bool pop(std::uint32_t& id) {
        const std::size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() <= floor) return error(WalkRule::malformed, "an opcode pops from an empty stack");
        id = stack_.back();
        stack_.pop_back();
        return true;
    }
    bool top(std::uint32_t& id) {
        const std::size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() <= floor) return error(WalkRule::malformed, "an opcode needs a value on an empty stack");
        id = stack_.back();
        return true;
    }
    // The items since the last MARK, removed from the stack with the mark.
    bool pop_mark(std::vector<std::uint32_t>& out) {
        if (marks_.empty()) return error(WalkRule::malformed, "an opcode needs a MARK that was never set");
        const std::size_t m = marks_.back();
        marks_.pop_back();
        out.assign(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
        stack_.resize(m);
        return true;
    }
    std::vector<std::uint32_t>& items_of(std::uint32_t id) {
        Node& n = p_.nodes[id];
        if (n.items == kNoNode) {
            n.items = static_cast<std::uint32_t>(p_.containers.size());
            p_.containers.emplace_back();
        }
        return p_.containers[n.items];
    }
    bool container(Kind kind, std::vector<std::uint32_t> items) {
        Node n;
        n.kind = kind;
        std::uint32_t id = 0;
        if (!add(n, id)) return false;
        if (!items.empty()) {  // an empty container gets its item list when first added to
            p_.nodes[id].items = static_cast<std::uint32_t>(p_.containers.size());
            p_.containers.push_back(std::move(items));
        }
        return push_id(id);
    }
    bool memo_put(std::uint64_t index) {
        std::uint32_t id = 0;
        if (!top(id)) return false;
        if (memo_.size() >= kMaxMemo && memo_.find(index) == memo_.end()) {
            return error(WalkRule::limit, "the pickle memo grows past 16,777,216 entries");
        }
        memo_[index] = id;
        return true;
    }
    bool memo_get(std::uint64_t index) {
        const auto it = memo_.find(index);
        if (it == memo_.end()) return error(WalkRule::malformed, "a memo GET names an index never PUT");
        return push_id(it->second);
    }
    bool decimal(std::string_view text, std::uint64_t& out) {
        if (text.empty() || text.size() > 19) return error(WalkRule::malformed, "a memo index is not a number");
        out = 0;
        for (const char c : text) {
            if (c < '0' || c > '9') return error(WalkRule::malformed, "a memo index is not a number");
            out = out * 10 + static_cast<std::uint64_t>(c - '0');
        }
        return true;
    }
    bool text_node(Kind kind, std::string_view text) {
        Node n;
        n.kind = kind;
        n.text = text;
        return push(n);
    }
    bool int_node(std::int64_t v, Kind kind = Kind::integer) {
        Node n;
        n.kind = kind;
        n.number = v;
        return push(n);
    }
    bool global(std::string_view module, std::string_view name) {
        Node n;
        n.kind = Kind::global;
        n.text = module;
        n.name = name;
        return push(n);
    }
    bool call(std::uint32_t callee, std::uint32_t args, bool newobj) {
        Node n;
        n.kind = Kind::call;
        n.callee = callee;
        n.args = args;
        n.newobj = newobj;
        return push(n);
    }
    bool sized_text(Kind kind, std::size_t width) {
        const unsigned char* p = nullptr;
        if (!take(width, p)) return false;
        const std::uint64_t n = read_le(p, width);
        if (n > size_ - pos_) return error(WalkRule::truncated, "a string runs past the end of the pickle");
        const std::string_view text(reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return text_node(kind, text);
    }
    // A protocol 0 quoted string: the text between the quotes, undecoded escapes kept.
    bool quoted(std::string_view raw) {
        if (raw.size() < 2 || (raw.front() != '\'' && raw.front() != '"') || raw.back() != raw.front()) {
            return error(WalkRule::malformed, "a STRING argument is not quoted");
        }
        return text_node(Kind::string, raw.substr(1, raw.size() - 2));
    }

    bool step(unsigned char op) {
        std::uint32_t a = 0, b = 0, c = 0;
        const unsigned char* p = nullptr;
        std::string_view s, t;
        std::vector<std::uint32_t> items;
        switch (op) {
        case 0x80:  // PROTO
            if (!take(1, p)) return false;
            if (*p > 5) return error(WalkRule::unsupported, "pickle protocol " + std::to_string(*p) + " is newer than 5");
            protocol_ = *p;
            return true;
        case 0x95:  // FRAME: the frame's bytes follow inline
            return take(8, p);
        case '.':   // STOP
            if (!pop(a)) return false;
            result_.root = a;
            stopped_ = true;
            return true;
        case '(':   // MARK
            if (marks_.size() >= kMaxMarks) return error(WalkRule::limit, "the pickle nests more than 65,536 MARKs");
            marks_.push_back(stack_.size());
            return true;
        case '0': return pop(a);
        case '1': return pop_mark(items);
        case '2': return top(a) && push_id(a);
        case 'N': { Node n; return push(n); }
        case 0x88: return int_node(1, Kind::boolean);
        case 0x89: return int_node(0, Kind::boolean);
        case 'K': return take(1, p) && int_node(static_cast<std::int64_t>(p[0]));
        case 'M': return take(2, p) && int_node(static_cast<std::int64_t>(read_le(p, 2)));
        case 'J':
            if (!take(4, p)) return false;
            return int_node(static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(p, 4))));
        case 0x8a: case 0x8b: {  // LONG1, LONG4
            const std::size_t width = op == 0x8a ? 1 : 4;
            if (!take(width, p)) return false;
            const std::uint64_t n = read_le(p, width);
            if (n > size_ - pos_) return error(WalkRule::truncated, "a long integer runs past the end of the pickle");
            const unsigned char* digits = data_ + pos_;
            pos_ += static_cast<std::size_t>(n);
            Node node;
            node.text = std::string_view(reinterpret_cast<const char*>(digits), static_cast<std::size_t>(n));
            if (n <= 8) {
                std::uint64_t v = read_le(digits, static_cast<std::size_t>(n));
                if (n > 0 && n < 8 && (digits[n - 1] & 0x80)) v |= ~0ULL << (8 * n);  // sign-extend
                node.kind = Kind::integer;
                node.number = static_cast<std::int64_t>(v);
            } else {
                node.kind = Kind::big_integer;
            }
            return push(node);
        }
        case 'I': case 'L': {  // INT, LONG (protocol 0 text)
            if (!line(s)) return false;
            if (op == 'L' && !s.empty() && s.back() == 'L') s.remove_suffix(1);
            if (op == 'I' && (s == "01" || s == "00")) return int_node(s == "01", Kind::boolean);
            bool negative = !s.empty() && s.front() == '-';
            std::string_view digits = negative || (!s.empty() && s.front() == '+') ? s.substr(1) : s;
            if (digits.empty()) return error(WalkRule::malformed, "an INT argument is not a number");
            std::uint64_t v = 0;
            bool big = false;
            for (const char ch : digits) {
                if (ch < '0' || ch > '9') return error(WalkRule::malformed, "an INT argument is not a number");
                if (v > (0x7FFFFFFFFFFFFFFFULL - 9) / 10) big = true;
                else v = v * 10 + static_cast<std::uint64_t>(ch - '0');
            }
            if (big) { Node node; node.kind = Kind::big_integer; node.text = s; return push(node); }
            const auto sv = static_cast<std::int64_t>(v);
            return int_node(negative ? -sv : sv);
        }
        case 'F': return line(s) && text_node(Kind::floating, s);
        case 'G': return take(8, p) && text_node(Kind::floating, std::string_view(reinterpret_cast<const char*>(p), 8));
        case 'S': return line(s) && quoted(s);
        case 'V': return line(s) && text_node(Kind::string, s);
        case 'T': return sized_text(Kind::string, 4);   // BINSTRING
        case 'U': return sized_text(Kind::string, 1);   // SHORT_BINSTRING
        case 'X': return sized_text(Kind::string, 4);   // BINUNICODE
        case 0x8c: return sized_text(Kind::string, 1);  // SHORT_BINUNICODE
        case 0x8d: return sized_text(Kind::string, 8);  // BINUNICODE8
        case 'B': return sized_text(Kind::bytes, 4);    // BINBYTES
        case 'C': return sized_text(Kind::bytes, 1);    // SHORT_BINBYTES
        case 0x8e: return sized_text(Kind::bytes, 8);   // BINBYTES8
        case 0x96: return sized_text(Kind::bytes, 8);   // BYTEARRAY8
        case 0x97: case 0x98:
            return error(WalkRule::unsupported, "the pickle uses out-of-band buffers (protocol 5), which a file cannot hold");
        case ')': return container(Kind::tuple, {});
        case ']': return container(Kind::list, {});
        case '}': return container(Kind::dict, {});
        case 0x8f: return container(Kind::set, {});
        case 't': return pop_mark(items) && container(Kind::tuple, std::move(items));
        case 'l': return pop_mark(items) && container(Kind::list, std::move(items));
        case 0x91: return pop_mark(items) && container(Kind::set, std::move(items));
        case 'd':
            if (!pop_mark(items)) return false;
            if (items.size() % 2 != 0) return error(WalkRule::malformed, "DICT has a key without a value");
            return container(Kind::dict, std::move(items));
        case 0x85: return pop(a) && container(Kind::tuple, {a});
        case 0x86: return pop(b) && pop(a) && container(Kind::tuple, {a, b});
        case 0x87: return pop(c) && pop(b) && pop(a) && container(Kind::tuple, {a, b, c});
        case 'a':  // APPEND
            if (!pop(b) || !top(a)) return false;
            items_of(a).push_back(b);
            return true;
        case 'e': case 0x90:  // APPENDS, ADDITEMS
            if (!pop_mark(items) || !top(a)) return false;
            { auto& into = items_of(a); into.insert(into.end(), items.begin(), items.end()); }
            return true;
        case 's':  // SETITEM
            if (!pop(c) || !pop(b) || !top(a)) return false;
            { auto& into = items_of(a); into.push_back(b); into.push_back(c); }
            return true;
        case 'u':  // SETITEMS
            if (!pop_mark(items)) return false;
            if (items.size() % 2 != 0) return error(WalkRule::malformed, "SETITEMS has a key without a value");
            if (!top(a)) return false;
            { auto& into = items_of(a); into.insert(into.end(), items.begin(), items.end()); }
            return true;
        case 'g': { std::uint64_t i = 0; return line(s) && decimal(s, i) && memo_get(i); }
        case 'h': return take(1, p) && memo_get(p[0]);
        case 'j': return take(4, p) && memo_get(read_le(p, 4));
        case 'p': { std::uint64_t i = 0; return line(s) && decimal(s, i) && memo_put(i); }
        case 'q': return take(1, p) && memo_put(p[0]);
        case 'r': return take(4, p) && memo_put(read_le(p, 4));
        case 0x94: return memo_put(memo_.size());  // MEMOIZE
        case 'c':  // GLOBAL: a name, never imported
            return line(s) && line(t) && global(s, t);
        case 0x93: {  // STACK_GLOBAL
            if (!pop(b) || !pop(a)) return false;
            const Node& m = p_.nodes[a];
            const Node& n = p_.nodes[b];
            if (m.kind != Kind::string || n.kind != Kind::string) {
                return error(WalkRule::malformed, "STACK_GLOBAL takes two strings");
            }
            return global(m.text, n.text);
        }
        case 0x82: case 0x83: case 0x84: {  // EXT1/2/4: the copyreg extension registry, never consulted
            const std::size_t width = op == 0x82 ? 1 : op == 0x83 ? 2 : 4;
            if (!take(width, p)) return false;
            p_.decoded.push_back(std::to_string(read_le(p, width)));
            return global("<extension code>", p_.decoded.back());
        }
        case 'i': {  // INST module\nname\n, args from MARK
            if (!line(s) || !line(t) || !pop_mark(items)) return false;
            if (!global(s, t)) return false;
            a = stack_.back();
            stack_.pop_back();
            if (!container(Kind::tuple, std::move(items))) return false;
            b = stack_.back();
            stack_.pop_back();
            return call(a, b, false);
        }
        case 'o': {  // OBJ: class then args, from MARK
            if (!pop_mark(items)) return false;
            if (items.empty()) return error(WalkRule::malformed, "OBJ without a class");
            a = items.front();
            items.erase(items.begin());
            if (!container(Kind::tuple, std::move(items))) return false;
            b = stack_.back();
            stack_.pop_back();
            return call(a, b, true);
        }
        case 'R': return pop(b) && pop(a) && call(a, b, false);       // REDUCE
        case 0x81: return pop(b) && pop(a) && call(a, b, true);       // NEWOBJ
        case 0x92: return pop(c) && pop(b) && pop(a) && call(a, b, true);  // NEWOBJ_EX (kwargs dropped)
        case 'b':  // BUILD
            if (!pop(b) || !top(a)) return false;
            p_.nodes[a].state = b;
            return true;
        case 'P': {  // PERSID
            if (!line(s) || !text_node(Kind::string, s)) return false;
            a = stack_.back();
            stack_.pop_back();
            Node n;
            n.kind = Kind::persistent_id;
            n.callee = a;
            return push(n);
        }
        case 'Q': {  // BINPERSID
            if (!pop(a)) return false;
            Node n;
            n.kind = Kind::persistent_id;
            n.callee = a;
            return push(n);
        }
        default: {
            static const char* hex = "0123456789abcdef";
            std::string code = "0x";
            code += hex[op >> 4];
            code += hex[op & 15];
            --pos_;
            return error(WalkRule::malformed, "unknown opcode " + code);
        }
        }
    }
};

}  // namespace

WalkResult Pickle::walk(const unsigned char* data, std::size_t size) {
    Walker walker(*this, data, size);
    return walker.run();
}

}  // namespace pyaudit::pickle
