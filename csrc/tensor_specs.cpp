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
    slots_.assign(capacity, 0);
    mask_ = capacity - 1;
    specs_.reserve(specs.size());
    for (TensorSpec& spec : specs) {
        if (find(spec.name) >= 0) continue;  // the first spec of a name holds
        if (specs_.size() >= 0xFFFFFFFEu) break;
        std::uint64_t slot = hash_bytes(spec.name) & mask_;
        while (slots_[slot] != 0) slot = (slot + 1) & mask_;
        slots_[slot] = static_cast<std::uint32_t>(specs_.size() + 1);
        std::uint64_t elements = 1;
        if (spec.shape) {
            for (const std::uint64_t d : *spec.shape) {
                if (!checked_mul(elements, d, elements)) elements = UINT64_MAX;
            }
        }
        shape_texts_.push_back(spec.shape ? shape_text(*spec.shape) : std::string());
        elements_.push_back(elements);
        if (!spec.optional) ++required_;
        specs_.push_back(std::move(spec));
    }
}

std::int64_t TensorSpecs::find(std::string_view name) const noexcept {
    std::uint64_t slot = hash_bytes(name) & mask_;
    while (const std::uint32_t held = slots_[slot]) {
        const std::size_t i = held - 1;
        if (specs_[i].name == name) return static_cast<std::int64_t>(i);
        slot = (slot + 1) & mask_;
    }
    return -1;
}

bool TensorSpecs::same_shape(const TensorSpec& spec, std::size_t index, const ParsedHeader& h,
                             const TensorRecord& t) const {
    const std::vector<std::uint64_t>& dims = *spec.shape;
    if (t.rank != dims.size() || t.elements_overflow || t.elements != elements_[index]) return false;
    const std::string_view text = std::string_view(h.text).substr(t.shape_offset, t.shape_length);
    if (text == shape_texts_[index]) return true;  // as every writer spells it
    return h.shape(t) == dims;                      // spaces, leading zeros: read the numbers
}

SpecMatch TensorSpecs::match(const std::vector<const ParsedHeader*>& headers,
                             const std::vector<std::int64_t>& groups) const {
    SpecMatch out;
    out.in_group.assign(headers.size(), 0);
    std::vector<unsigned char> seen(specs_.size(), 0);
    for (std::size_t hi = 0; hi < headers.size(); ++hi) {
        const ParsedHeader* h = headers[hi];
        if (h == nullptr || !h->ok()) continue;
        const std::int64_t group = hi < groups.size() ? groups[hi] : -1;
        for (const TensorRecord& t : h->tensors) {
            ++out.tensors;
            const std::int64_t found = find(h->name(t));
            if (found < 0) continue;
            const auto i = static_cast<std::size_t>(found);
            const TensorSpec& spec = specs_[i];
            ++out.known;
            if (seen[i]) {
                ++out.repeated;
            } else {
                seen[i] = 1;
                ++(spec.optional ? out.optional_seen : out.required_seen);
            }
            if (spec.dtype && *spec.dtype != t.dtype) ++out.dtype_differs;
            if (spec.shape && !same_shape(spec, i, *h, t)) ++out.shape_differs;
            if (group >= 0 && spec.group == group) ++out.in_group[hi];
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
