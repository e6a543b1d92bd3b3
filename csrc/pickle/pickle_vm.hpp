// A pickle opcode walker that never executes: protocols 0-5 read as data.
//
// Every opcode becomes (at most) one node of a tree held in one arena: numbers,
// strings (views into the input), tuples, lists, dicts, and for the opcodes that
// would run code (GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE, NEWOBJ, BUILD, PERSID)
// nodes that only record what would have been called with what. Nothing is
// imported, looked up or called. Memory is bounded by the input: each opcode adds
// a constant number of nodes and child slots, and the counts are capped.
// Failures are values (rule + message), never exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace pyaudit::pickle {

inline constexpr std::uint32_t kNoNode = 0xFFFFFFFFu;
inline constexpr std::size_t kMaxStack = 1u << 20;     // items on the stack
inline constexpr std::size_t kMaxMarks = 1u << 16;     // open MARKs
inline constexpr std::size_t kMaxNodes = 1u << 22;     // values in one arena (~64 bytes each)
inline constexpr std::size_t kMaxMemo = 1u << 24;      // memo entries

enum class Kind : std::uint8_t {
    none, boolean, integer, big_integer, floating, string, bytes,
    tuple, list, dict, set, global, call, persistent_id, opaque,
};

struct Node {
    Kind kind = Kind::none;
    bool newobj = false;        // call made by NEWOBJ / NEWOBJ_EX (class + args)
    std::int64_t number = 0;    // integer / boolean value
    std::string_view text;      // string / bytes; global: module
    std::string_view name;      // global: qualified name
    std::uint32_t callee = kNoNode;  // call: the callable; persistent_id: the pid
    std::uint32_t args = kNoNode;    // call: the argument tuple
    std::uint32_t state = kNoNode;   // BUILD state
    std::uint32_t items = kNoNode;   // index into Pickle::containers (tuple/list/dict/set items)
};

enum class WalkRule : std::uint8_t { ok, truncated, malformed, limit, unsupported };

struct WalkResult {
    WalkRule rule = WalkRule::ok;
    std::string message;
    std::size_t end = 0;            // bytes consumed (through STOP)
    std::uint32_t root = kNoNode;
    int protocol = 0;
};

// The arena of one or more walked pickles (the legacy format holds several).
class Pickle {
public:
    std::vector<Node> nodes;
    // Items of containers: a dict's are key, value, key, value ...
    std::vector<std::vector<std::uint32_t>> containers;
    // Text that had to be decoded (protocol 0 strings with escapes).
    std::deque<std::string> decoded;

    // Walks one pickle starting at data[0]; nodes are added to this arena.
    WalkResult walk(const unsigned char* data, std::size_t size);

    const Node& at(std::uint32_t id) const { return nodes[id]; }
    const std::vector<std::uint32_t>* items(std::uint32_t id) const {
        if (id >= nodes.size() || nodes[id].items == kNoNode) return nullptr;
        return &containers[nodes[id].items];
    }
};

}  // namespace pyaudit::pickle
