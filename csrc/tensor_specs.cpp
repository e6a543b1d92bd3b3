#include "tensor_specs.hpp"

#include <cstring>
#include <utility>

#include "checked.hpp"
#include "hash.hpp"

namespace pyaudit {
namespace {

std::string shape_text(const std::vector<std::uint64_t>& dims) {
    std::string s = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) {
        if (i) s += ',';
        s += std::to_string(dims[i]);
    }
    s += ']';
    return s;
}

std::vector<const ParsedHeader*> valid(const std::vector<const ParsedHeader*>& headers) {
    std::vector<const ParsedHeader*> out;
    out.reserve(headers.size());
    for (const ParsedHeader* h : headers) {
        if (h != nullptr && h->ok()) out.push_back(h);
    }
    return out;
}

}  // namespace

TensorSpecs::TensorSpecs(std::vector<TensorSpec> specs) {
    std::size_t capacity = 16;
    while (capacity < specs.size() * 2) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    specs_.reserve(specs.size());
    entries_.reserve(specs.size());
    for (TensorSpec& spec : specs) {
        const std::uint64_t hash = hash_bytes(spec.name);
        if (find(spec.name, hash) >= 0) continue;  // the first spec of a name holds
        const std::string shape = spec.shape ? shape_text(*spec.shape) : std::string();
        if (specs_.size() >= 0xFFFFFFFEu || strings_.size() + spec.name.size() + shape.size() > 0xFFFFFFFFu) {
            break;  // beyond what 32-bit offsets address: never a real table
        }
        Entry e;
        e.name_offset = static_cast<std::uint32_t>(strings_.size());
        e.name_length = static_cast<std::uint32_t>(spec.name.size());
        strings_ += spec.name;
        e.shape_offset = static_cast<std::uint32_t>(strings_.size());
        e.shape_length = static_cast<std::uint32_t>(shape.size());
        strings_ += shape;
        if (spec.shape) {
            e.has_shape = true;
            e.rank = static_cast<std::uint32_t>(spec.shape->size());
            for (const std::uint64_t d : *spec.shape) {
                if (!checked_mul(e.elements, d, e.elements)) e.elements = UINT64_MAX;
            }
        }
        e.dtype = spec.dtype ? static_cast<std::int16_t>(*spec.dtype) : std::int16_t{-1};
        e.group = spec.group;
        e.optional = spec.optional;
        std::uint64_t slot = hash & mask_;
        while (slots_[slot].entry != 0) slot = (slot + 1) & mask_;
        slots_[slot] = Slot{static_cast<std::uint32_t>(hash >> 32), static_cast<std::uint32_t>(entries_.size() + 1)};
        entries_.push_back(e);
        if (!spec.optional) ++required_;
        specs_.push_back(std::move(spec));
    }
}

std::int64_t TensorSpecs::find(std::string_view name) const noexcept { return find(name, hash_bytes(name)); }

std::int64_t TensorSpecs::find(std::string_view name, std::uint64_t hash) const noexcept {
    const auto tag = static_cast<std::uint32_t>(hash >> 32);
    for (std::uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
        const Slot& s = slots_[slot];
        if (s.entry == 0) return -1;
        if (s.tag == tag && name_of(entries_[s.entry - 1]) == name) return static_cast<std::int64_t>(s.entry - 1);
    }
}

bool TensorSpecs::same_shape(std::size_t index, const ParsedHeader& h, const TensorRecord& t) const {
    const Entry& e = entries_[index];
    if (t.rank != e.rank || t.elements_overflow || t.elements != e.elements) return false;
    const std::string_view text = std::string_view(h.text).substr(t.shape_offset, t.shape_length);
    if (text == std::string_view(strings_).substr(e.shape_offset, e.shape_length)) return true;  // as writers spell it
    return h.shape(t) == *specs_[index].shape;  // spaces, leading zeros: read the numbers
}

SpecMatch TensorSpecs::match(const std::vector<const ParsedHeader*>& headers,
                             const std::vector<std::int64_t>& groups) const {
    SpecMatch out;
    out.in_group.assign(headers.size(), 0);
    std::vector<unsigned char> seen(entries_.size(), 0);
    for (std::size_t hi = 0; hi < headers.size(); ++hi) {
        const ParsedHeader* h = headers[hi];
        if (h == nullptr || !h->ok()) continue;
        const std::int64_t group = hi < groups.size() ? groups[hi] : -1;
        for (const TensorRecord& t : h->tensors) {
            ++out.tensors;
            const std::int64_t found = find(h->name(t));
            if (found < 0) continue;
            const auto i = static_cast<std::size_t>(found);
            const Entry& e = entries_[i];
            ++out.known;
            if (seen[i]) {
                ++out.repeated;
            } else {
                seen[i] = 1;
                ++(e.optional ? out.optional_seen : out.required_seen);
            }
            if (e.dtype >= 0 && e.dtype != static_cast<std::int16_t>(t.dtype)) ++out.dtype_differs;
            if (e.has_shape && !same_shape(i, *h, t)) ++out.shape_differs;
            if (group >= 0 && e.group == group) ++out.in_group[hi];
        }
    }
    return out;
}

std::uint64_t count_repeated_names(const std::vector<const ParsedHeader*>& headers) {
    const std::vector<const ParsedHeader*> hs = valid(headers);
    std::size_t total = 0;
    for (const ParsedHeader* h : hs) total += h->tensors.size();
    std::size_t capacity = 16;
    while (capacity < total * 2) capacity *= 2;
    const std::uint64_t mask = capacity - 1;
    std::vector<std::string_view> slots(capacity);
    std::vector<unsigned char> used(capacity, 0);
    std::uint64_t repeated = 0;
    for (const ParsedHeader* h : hs) {
        for (const TensorRecord& t : h->tensors) {
            const std::string_view name = h->name(t);
            std::uint64_t slot = hash_bytes(name) & mask;
            bool again = false;
            while (used[slot]) {
                if (slots[slot] == name) {
                    again = true;
                    break;
                }
                slot = (slot + 1) & mask;
            }
            if (again) {
                ++repeated;
            } else {
                used[slot] = 1;
                slots[slot] = name;
            }
        }
    }
    return repeated;
}

std::uint64_t count_names_containing(const std::vector<const ParsedHeader*>& headers,
                                     std::string_view needle) {
    std::uint64_t count = 0;
    for (const ParsedHeader* h : valid(headers)) {
        for (const TensorRecord& t : h->tensors) {
            if (h->name(t).find(needle) != std::string_view::npos) ++count;
        }
    }
    return count;
}

}  // namespace pyaudit
