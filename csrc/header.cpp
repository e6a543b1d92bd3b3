#include "header.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <unordered_map>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "checked.hpp"
#include "utf8.hpp"

namespace pyaudit {

std::string_view rule_code(Rule rule) noexcept {
    switch (rule) {
        case Rule::ok: return "ok";
        case Rule::io_error: return "io-error";
        case Rule::too_small: return "too-small";
        case Rule::lfs_pointer: return "lfs-pointer";
        case Rule::header_too_large: return "header-too-large";
        case Rule::header_truncated: return "header-truncated";
        case Rule::not_utf8: return "not-utf8";
        case Rule::not_json: return "not-json";
        case Rule::wrong_type: return "wrong-type";
        case Rule::bad_metadata: return "bad-metadata";
        case Rule::unknown_dtype: return "unknown-dtype";
        case Rule::bad_number: return "bad-number";
        case Rule::duplicate_tensor: return "duplicate-tensor";
        case Rule::overflow: return "overflow";
        case Rule::misaligned: return "misaligned";
        case Rule::extent_mismatch: return "extent-mismatch";
        case Rule::offsets_reversed: return "offsets-reversed";
        case Rule::offsets_gap: return "offsets-gap";
        case Rule::offsets_overlap: return "offsets-overlap";
        case Rule::data_truncated: return "data-truncated";
        case Rule::trailing_bytes: return "trailing-bytes";
    }
    return "unknown";
}

std::string_view ParsedHeader::name(const TensorRecord& t) const noexcept {
    if (t.name_escaped) return escaped_names[t.name_offset];
    return std::string_view(text).substr(t.name_offset, t.name_length);
}

std::vector<std::uint64_t> ParsedHeader::shape(const TensorRecord& t) const {
    // The span was validated as "[" (uint ("," uint)*)? "]" with JSON whitespace.
    std::vector<std::uint64_t> dims;
    dims.reserve(t.rank);
    const std::string_view span = std::string_view(text).substr(t.shape_offset, t.shape_length);
    std::uint64_t value = 0;
    bool in_number = false;
    for (const char c : span) {
        if (c >= '0' && c <= '9') {
            value = value * 10 + static_cast<std::uint64_t>(c - '0');
            in_number = true;
        } else if (in_number) {
            dims.push_back(value);
            value = 0;
            in_number = false;
        }
    }
    return dims;
}

std::uint64_t read_length_prefix(const unsigned char* first8) noexcept {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];
    return n;
}

bool looks_like_lfs_pointer(const unsigned char* data, std::size_t size) noexcept {
    static constexpr std::string_view kMagic = "version https://git-lfs";
    return size >= kMagic.size() &&
           std::string_view(reinterpret_cast<const char*>(data), kMagic.size()) == kMagic;
}

std::uint64_t header_extent(const unsigned char* data, std::size_t size, std::uint64_t file_size) noexcept {
    if (size < kLengthPrefix || file_size < kLengthPrefix || looks_like_lfs_pointer(data, size)) return 0;
    const std::uint64_t n = read_length_prefix(data);
    if (n > kMaxHeaderSize || n > file_size - kLengthPrefix) return 0;
    return n + kLengthPrefix;
}

namespace {

std::string quoted(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 2);
    out.push_back('\'');
    // Keep messages printable and bounded whatever the header holds.
    // The cut never splits a UTF-8 sequence: messages stay valid UTF-8.
    std::size_t cut = std::min<std::size_t>(s.size(), 200);
    while (cut > 0 && cut < s.size() && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    for (std::size_t i = 0; i < cut; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        out.push_back(c < 0x20 ? '?' : s[i]);
    }
    if (cut < s.size()) out += "...";
    out.push_back('\'');
    return out;
}

// The first byte in [p, end) that ends a plain run of string characters: a
// quote, a backslash, a control character (< 0x20) or a non-ASCII byte (>= 0x80,
// noted for the UTF-8 check); `end` when none. Sixteen bytes at a time where
// SSE2 is there (every x86-64).
inline bool ends_plain_run(unsigned char c) noexcept {
    return c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
}

const char* scan_plain_run(const char* p, const char* end) noexcept {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i control_max = _mm_set1_epi8(0x1F);
    while (end - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
            _mm_cmpeq_epi8(_mm_min_epu8(v, control_max), v));  // v <= 0x1F, unsigned
        const int mask = _mm_movemask_epi8(_mm_or_si128(hit, v));  // v's own top bit: >= 0x80
        if (mask != 0) return p + __builtin_ctz(static_cast<unsigned>(mask));
        p += 16;
    }
#endif
    while (p < end && !ends_plain_run(static_cast<unsigned char>(*p))) ++p;
    return p;
}

#if defined(__SSE2__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PYAUDIT_FAST_DIGITS 1
// How many of the 16 bytes at p are ASCII digits, from the first (16 readable bytes).
inline unsigned digit_run16(const char* p) noexcept {
    const __m128i v = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), _mm_set1_epi8('0'));
    const __m128i digit = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(9)), v);  // v - '0' <= 9
    const unsigned not_digit = ~static_cast<unsigned>(_mm_movemask_epi8(digit)) & 0xFFFFu;
    return not_digit == 0 ? 16u : static_cast<unsigned>(__builtin_ctz(not_digit));
}

// The value of the eight ASCII digits in w, the first digit in the lowest byte.
inline std::uint64_t eight_digits(std::uint64_t w) noexcept {
    w = ((w & 0x0F0F0F0F0F0F0F0FULL) * 2561) >> 8;
    w = ((w & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
    return ((w & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
}

// The value of the n (1..8) ASCII digits at p (8 readable bytes).
inline std::uint64_t leading_digits(const char* p, unsigned n) noexcept {
    std::uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return eight_digits(w << (8 * (8 - n)));  // the bytes after the digits fall off the top
}
#endif

// serde_json (without its float_roundtrip feature, as the reference builds it)
// turns a number that is not a 64-bit integer into an f64 its own way, and
// rejects the number when that overflows. Its way is not correctly rounded:
// digits beyond what fits in a u64 are dropped, and the decimal exponent is
// applied with one multiplication by a power of ten. So numbers just below
// DBL_MAX (1.7976931348623158e308, say) are out of range for the reference
// though strtod rounds them to DBL_MAX. This follows serde_json's
// parse_integer / parse_long_integer / parse_decimal / parse_exponent /
// f64_from_parts step by step; only the verdict is kept, not the value.
constexpr double kPow10[309] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32,
    1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48,
    1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58, 1e59, 1e60, 1e61, 1e62, 1e63, 1e64,
    1e65, 1e66, 1e67, 1e68, 1e69, 1e70, 1e71, 1e72, 1e73, 1e74, 1e75, 1e76, 1e77, 1e78, 1e79, 1e80,
    1e81, 1e82, 1e83, 1e84, 1e85, 1e86, 1e87, 1e88, 1e89, 1e90, 1e91, 1e92, 1e93, 1e94, 1e95, 1e96,
    1e97, 1e98, 1e99, 1e100, 1e101, 1e102, 1e103, 1e104, 1e105, 1e106, 1e107, 1e108, 1e109, 1e110,
    1e111, 1e112, 1e113, 1e114, 1e115, 1e116, 1e117, 1e118, 1e119, 1e120, 1e121, 1e122, 1e123,
    1e124, 1e125, 1e126, 1e127, 1e128, 1e129, 1e130, 1e131, 1e132, 1e133, 1e134, 1e135, 1e136,
    1e137, 1e138, 1e139, 1e140, 1e141, 1e142, 1e143, 1e144, 1e145, 1e146, 1e147, 1e148, 1e149,
    1e150, 1e151, 1e152, 1e153, 1e154, 1e155, 1e156, 1e157, 1e158, 1e159, 1e160, 1e161, 1e162,
    1e163, 1e164, 1e165, 1e166, 1e167, 1e168, 1e169, 1e170, 1e171, 1e172, 1e173, 1e174, 1e175,
    1e176, 1e177, 1e178, 1e179, 1e180, 1e181, 1e182, 1e183, 1e184, 1e185, 1e186, 1e187, 1e188,
    1e189, 1e190, 1e191, 1e192, 1e193, 1e194, 1e195, 1e196, 1e197, 1e198, 1e199, 1e200, 1e201,
    1e202, 1e203, 1e204, 1e205, 1e206, 1e207, 1e208, 1e209, 1e210, 1e211, 1e212, 1e213, 1e214,
    1e215, 1e216, 1e217, 1e218, 1e219, 1e220, 1e221, 1e222, 1e223, 1e224, 1e225, 1e226, 1e227,
    1e228, 1e229, 1e230, 1e231, 1e232, 1e233, 1e234, 1e235, 1e236, 1e237, 1e238, 1e239, 1e240,
    1e241, 1e242, 1e243, 1e244, 1e245, 1e246, 1e247, 1e248, 1e249, 1e250, 1e251, 1e252, 1e253,
    1e254, 1e255, 1e256, 1e257, 1e258, 1e259, 1e260, 1e261, 1e262, 1e263, 1e264, 1e265, 1e266,
    1e267, 1e268, 1e269, 1e270, 1e271, 1e272, 1e273, 1e274, 1e275, 1e276, 1e277, 1e278, 1e279,
    1e280, 1e281, 1e282, 1e283, 1e284, 1e285, 1e286, 1e287, 1e288, 1e289, 1e290, 1e291, 1e292,
    1e293, 1e294, 1e295, 1e296, 1e297, 1e298, 1e299, 1e300, 1e301, 1e302, 1e303, 1e304, 1e305,
    1e306, 1e307, 1e308
};

bool serde_number_out_of_range(std::string_view token) noexcept {
    constexpr std::uint64_t kMax = ~std::uint64_t{0};
    // serde_json's overflow!(a * 10 + b, u64::MAX)
    const auto overflows = [](std::uint64_t a, std::uint64_t b) {
        return a >= kMax / 10 && (a > kMax / 10 || b > kMax % 10);
    };
    const auto saturate = [](std::int64_t v) {
        return static_cast<std::int32_t>(std::clamp<std::int64_t>(v, INT32_MIN, INT32_MAX));
    };
    std::size_t i = 0;
    const std::size_t n = token.size();
    if (i < n && token[i] == '-') ++i;
    std::uint64_t significand = 0;
    std::int64_t exponent = 0;  // serde's i32, exact here (a header is < 2^31 bytes)
    bool dropping = false;      // digits past the u64 are dropped, each adds one to the exponent
    for (; i < n && token[i] >= '0' && token[i] <= '9'; ++i) {
        const auto digit = static_cast<std::uint64_t>(token[i] - '0');
        if (dropping || overflows(significand, digit)) {
            dropping = true;
            ++exponent;
        } else {
            significand = significand * 10 + digit;
        }
    }
    if (i < n && token[i] == '.') {
        ++i;
        bool fraction_dropping = false;  // a fresh check: serde's parse_decimal
        for (; i < n && token[i] >= '0' && token[i] <= '9'; ++i) {
            const auto digit = static_cast<std::uint64_t>(token[i] - '0');
            if (fraction_dropping) continue;
            if (overflows(significand, digit)) {
                fraction_dropping = true;
            } else {
                significand = significand * 10 + digit;
                --exponent;
            }
        }
    }
    std::int32_t final_exponent = saturate(exponent);
    if (i < n && (token[i] == 'e' || token[i] == 'E')) {
        ++i;
        bool positive = true;
        if (i < n && (token[i] == '+' || token[i] == '-')) positive = token[i++] == '+';
        std::int32_t e = 0;
        for (; i < n && token[i] >= '0' && token[i] <= '9'; ++i) {
            const int digit = token[i] - '0';
            if (e >= INT32_MAX / 10 && (e > INT32_MAX / 10 || digit > INT32_MAX % 10)) {
                // parse_exponent_overflow: an error only for a non-zero number growing.
                return significand != 0 && positive;
            }
            e = e * 10 + digit;
        }
        final_exponent = saturate(positive ? std::int64_t{final_exponent} + e : std::int64_t{final_exponent} - e);
    }
    // f64_from_parts
    double f = static_cast<double>(significand);
    std::int64_t exp10 = final_exponent;
    while (true) {
        const std::int64_t index = exp10 < 0 ? -exp10 : exp10;
        if (index <= 308) {
            if (exp10 >= 0) return std::isinf(f * kPow10[index]);
            return false;
        }
        if (f == 0.0) return false;
        if (exp10 >= 0) return true;
        f /= 1e308;
        exp10 += 308;
    }
}

// A strict, single-pass reader of the header JSON, the shape the format allows.
// It follows serde_json's rules where the reference relies on them: whitespace is
// " \t\n\r", nesting at most 127 deep, strings free of raw control characters and
// lone surrogates, integers for shapes and offsets.
class HeaderReader {
public:
    explicit HeaderReader(ParsedHeader& out)
        : out_(out),
          begin_(out.text.data()),
          p_(out.text.data()),
          end_(out.text.data() + out.text.size()) {}

    bool run();

    // False when every byte the reader has passed is ASCII. Outside strings the
    // grammar admits only ASCII, and inside them every byte goes through
    // scan_plain_run, which stops at (and read_string notes) any byte >= 0x80.
    bool saw_non_ascii() const noexcept { return non_ascii_; }

private:
    ParsedHeader& out_;
    const char* begin_;
    const char* p_;
    const char* end_;
    int depth_ = 0;
    std::string scratch_;
    // The tensor being read: a view into the header text, or into
    // out_.escaped_names.back() for a name with escapes (stable until the next one).
    std::string_view current_tensor_;
    std::unordered_map<std::string, std::size_t> metadata_index_;
    bool non_ascii_ = false;  // a string held a byte >= 0x80
    std::string_view last_dtype_text_;  // the compact path's last dtype, and its value
    Dtype last_dtype_ = Dtype::U8;

    bool fail(Rule rule, std::string message) {
        out_.issue.rule = rule;
        out_.issue.tensor = current_tensor_;
        if (rule == Rule::not_json && !current_tensor_.empty()) {
            message += " (in the entry of tensor " + quoted(current_tensor_) + ")";
        }
        out_.issue.message = std::move(message);
        return false;
    }

    std::string at() const {
        return " at byte " + std::to_string(p_ - begin_) + " of the header";
    }

    bool syntax(std::string_view what) {
        if (p_ >= end_) return fail(Rule::not_json, "invalid JSON: unexpected end of header, " + std::string(what));
        return fail(Rule::not_json, "invalid JSON" + at() + ": " + std::string(what));
    }

    void skip_ws() noexcept {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
    }

    bool enter() {
        if (++depth_ >= kMaxJsonDepth) return fail(Rule::not_json, "invalid JSON: nesting deeper than 127 levels" + at());
        return true;
    }

    bool expect(char c) {
        if (p_ < end_ && *p_ == c) {  // compact JSON: no whitespace to skip
            ++p_;
            return true;
        }
        return expect_after_ws(c);
    }

    [[gnu::noinline]] bool expect_after_ws(char c) {
        skip_ws();
        if (p_ >= end_ || *p_ != c) return syntax(std::string("expected '") + c + "'");
        ++p_;
        return true;
    }

    static int hex_value(char c) noexcept {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    }

    bool read_hex4(std::uint32_t& cp) {
        if (end_ - p_ < 4) return syntax("truncated \\u escape");
        cp = 0;
        for (int i = 0; i < 4; ++i) {
            const int v = hex_value(p_[i]);
            if (v < 0) return syntax("invalid \\u escape");
            cp = (cp << 4) | static_cast<std::uint32_t>(v);
        }
        p_ += 4;
        return true;
    }

    static void append_utf8(std::string& s, std::uint32_t cp) {
        if (cp < 0x80) {
            s.push_back(static_cast<char>(cp));
        } else if (cp < 0x800) {
            s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
            s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
            s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        } else {
            s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
            s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
            s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
        }
    }

    // Reads a string at p_ (which must be '"'). `raw` is the text between the
    // quotes; when the string holds escapes, `escaped` is set and `decoded` holds
    // its value.
    bool read_string(std::string_view& raw, bool& escaped, std::string& decoded) {
        if (p_ >= end_ || *p_ != '"') return syntax("expected a string");
        ++p_;
        const char* start = p_;
        escaped = false;
        while (true) {
            // Fast scan to the next quote, backslash or control character.
            p_ = scan_plain_run(p_, end_);
            if (p_ >= end_) return syntax("unterminated string");
            const auto c = static_cast<unsigned char>(*p_);
            if (c == '"') break;
            if (c < 0x20) return syntax("control character in a string");
            if (c >= 0x80) {  // part of a multi-byte character: the UTF-8 check will see it
                non_ascii_ = true;
                const char* run = p_;
                p_ = scan_plain_run(p_ + 1, end_);
                if (escaped) decoded.append(run, static_cast<std::size_t>(p_ - run));
                continue;
            }
            // A backslash escape.
            if (!escaped) {
                escaped = true;
                decoded.assign(start, static_cast<std::size_t>(p_ - start));
            }
            ++p_;
            if (p_ >= end_) return syntax("unterminated escape");
            const char e = *p_++;
            switch (e) {
                case '"': decoded.push_back('"'); break;
                case '\\': decoded.push_back('\\'); break;
                case '/': decoded.push_back('/'); break;
                case 'b': decoded.push_back('\b'); break;
                case 'f': decoded.push_back('\f'); break;
                case 'n': decoded.push_back('\n'); break;
                case 'r': decoded.push_back('\r'); break;
                case 't': decoded.push_back('\t'); break;
                case 'u': {
                    std::uint32_t cp = 0;
                    if (!read_hex4(cp)) return false;
                    if (cp >= 0xDC00 && cp <= 0xDFFF) return syntax("lone trailing surrogate in \\u escape");
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
                            return syntax("lone leading surrogate in \\u escape");
                        }
                        p_ += 2;
                        std::uint32_t lo = 0;
                        if (!read_hex4(lo)) return false;
                        if (lo < 0xDC00 || lo > 0xDFFF) return syntax("lone leading surrogate in \\u escape");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    append_utf8(decoded, cp);
                    break;
                }
                default: return syntax("invalid escape");
            }
            // Copy the plain run that follows, up to the next special character.
            const char* run = p_;
            p_ = scan_plain_run(p_, end_);
            decoded.append(run, static_cast<std::size_t>(p_ - run));
        }
        raw = std::string_view(start, static_cast<std::size_t>(p_ - start));
        ++p_;  // closing quote
        return true;
    }

    bool read_string_value(std::string& value) {
        std::string_view raw;
        bool escaped;
        if (!read_string(raw, escaped, scratch_)) return false;
        if (escaped) {
            value = scratch_;
        } else {
            value.assign(raw);
        }
        return true;
    }

    // A JSON number token at p_: [-] int [frac] [exp]. Sets the flags.
    bool scan_number(const char*& start, bool& is_plain_uint) {
        start = p_;
        bool negative = false, fraction = false, exponent = false;
        if (p_ < end_ && *p_ == '-') {
            negative = true;
            ++p_;
        }
        if (p_ >= end_ || *p_ < '0' || *p_ > '9') return syntax("invalid number");
        if (*p_ == '0') {
            ++p_;
            if (p_ < end_ && *p_ >= '0' && *p_ <= '9') return syntax("invalid number (leading zero)");
        } else {
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        }
        if (p_ < end_ && *p_ == '.') {
            fraction = true;
            ++p_;
            if (p_ >= end_ || *p_ < '0' || *p_ > '9') return syntax("invalid number");
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            exponent = true;
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (p_ >= end_ || *p_ < '0' || *p_ > '9') return syntax("invalid number");
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
        }
        is_plain_uint = !negative && !fraction && !exponent;
        return true;
    }

    // A number that is not a 64-bit integer is an f64 to serde_json, an error
    // when out of its range (see serde_number_out_of_range).
    bool check_number_range(const char* start) {
        const std::string_view token(start, static_cast<std::size_t>(p_ - start));
        if (serde_number_out_of_range(token)) {
            return fail(Rule::not_json, "invalid JSON: number out of range" + at());
        }
        return true;
    }

    // The members of the object or array whose opening bracket p_ is on (`close`: '}' or
    // ']'): one nesting level is entered, `member` reads each member (returning false on
    // failure; object members read their own key and ':'), the commas and the closing
    // bracket are read here, and the level is left. An empty one calls `member` never.
    template <typename Member>
    bool each_member(char close, Member&& member) {
        if (!enter()) return false;
        ++p_;
        skip_ws();
        if (p_ < end_ && *p_ == close) {
            ++p_;
            --depth_;
            return true;
        }
        while (true) {
            if (!member()) return false;
            skip_ws();
            if (p_ < end_ && *p_ == ',') {
                ++p_;
                continue;
            }
            if (!expect(close)) return false;
            --depth_;
            return true;
        }
    }

    bool skip_value() {
        skip_ws();
        if (p_ >= end_) return syntax("expected a value");
        switch (*p_) {
            case '{':
                return each_member('}', [this] {
                    skip_ws();
                    std::string_view raw;
                    bool escaped;
                    return read_string(raw, escaped, scratch_) && expect(':') && skip_value();
                });
            case '[':
                return each_member(']', [this] { return skip_value(); });
            case '"': {
                std::string_view raw;
                bool escaped;
                return read_string(raw, escaped, scratch_);
            }
            case 't': return literal("true");
            case 'f': return literal("false");
            case 'n': return literal("null");
            default: {
                const char* start = p_;
                bool plain = false;
                if (!scan_number(start, plain)) return false;
                if (!plain || p_ - start > 19) return check_number_range(start);
                return true;
            }
        }
    }

    bool literal(std::string_view word) {
        if (static_cast<std::size_t>(end_ - p_) < word.size() ||
            std::string_view(p_, word.size()) != word) {
            return syntax("invalid literal");
        }
        p_ += word.size();
        return true;
    }

    // What kind of JSON value starts at p_, for messages.
    std::string_view kind_here() const noexcept {
        if (p_ >= end_) return "nothing";
        switch (*p_) {
            case '{': return "an object";
            case '[': return "an array";
            case '"': return "a string";
            case 't': case 'f': return "a boolean";
            case 'n': return "null";
            default: return "a number";
        }
    }

    // The value at p_ has the wrong kind for `field`: a wrong-type failure when it
    // is a valid JSON value, a syntax failure when it is not.
    bool wrong_kind(std::string_view field, std::string_view expected) {
        const std::string_view kind = kind_here();
        if (!skip_value()) return false;
        return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) + ": " + std::string(field) +
                                          " holds " + std::string(kind) + ", not " + std::string(expected));
    }

    // ---- The compact fast path -------------------------------------------
    // Writers emit every tensor entry in one form:
    //   {"dtype":"BF16","shape":[3584,18944],"data_offsets":[0,135790592]}
    // no whitespace, these three keys in this order, plain integers. That form is
    // read here in one pass. Anything else (other spacing, order, escapes, a
    // number with a sign, fraction, exponent, leading zero or 16+ digits, an
    // unknown dtype) makes read_tensor_compact return false having consumed
    // nothing, and the general reader reads the same bytes and reports any error.
    // On what it accepts, the fast path sets exactly what the general one would.

    bool take(const char*& q, std::string_view literal) const noexcept {
        if (static_cast<std::size_t>(end_ - q) < literal.size() ||
            std::memcmp(q, literal.data(), literal.size()) != 0) {
            return false;
        }
        q += literal.size();
        return true;
    }

    // A plain integer of at most 15 digits followed by ',' or ']'.
    bool compact_uint(const char*& q, std::uint64_t& value) const noexcept {
        if (q >= end_) return false;
        if (*q == '0') {
            ++q;
            value = 0;
            return q < end_ && (*q == ',' || *q == ']');
        }
        if (*q < '1' || *q > '9') return false;
        unsigned n = 0;
#ifdef PYAUDIT_FAST_DIGITS
        if (end_ - q >= 16) {
            n = digit_run16(q);
            if (n >= 16) return false;
            static constexpr std::uint64_t kDigitPow10[8] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000};
            value = n <= 8 ? leading_digits(q, n) : leading_digits(q, 8) * kDigitPow10[n - 8] + leading_digits(q + 8, n - 8);
        } else
#endif
        {
            std::uint64_t v = 0;
            while (q + n < end_ && q[n] >= '0' && q[n] <= '9') {
                if (n == 15) return false;
                v = v * 10 + static_cast<std::uint64_t>(q[n] - '0');
                ++n;
            }
            value = v;
        }
        q += n;
        return q < end_ && (*q == ',' || *q == ']');
    }

    bool read_tensor_compact(TensorRecord& t) {
        static constexpr std::string_view kDtype = "{\"dtype\":\"";
        static constexpr std::string_view kShape = "\",\"shape\":[";
        static constexpr std::string_view kOffsets = ",\"data_offsets\":[";
        const char* q = p_;
        if (depth_ + 2 >= kMaxJsonDepth || !take(q, kDtype)) return false;
        const char* dtype_start = q;
        while (q < end_ && ((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_')) ++q;
        const std::string_view dtype_text(dtype_start, static_cast<std::size_t>(q - dtype_start));
        if (dtype_text != last_dtype_text_ || last_dtype_text_.empty()) {
            const auto dtype = dtype_from_name(dtype_text);
            if (!dtype) return false;
            last_dtype_text_ = dtype_text;
            last_dtype_ = *dtype;
        }
        if (!take(q, kShape)) return false;
        const char* open = q - 1;
        std::uint32_t rank = 0;
        std::uint64_t elements = 1;
        bool overflow = false;
        if (q < end_ && *q == ']') {
            ++q;
        } else {
            while (true) {
                std::uint64_t d;
                if (!compact_uint(q, d)) return false;
                ++rank;
                if (!overflow && !checked_mul(elements, d, elements)) overflow = true;
                if (*q++ == ']') break;  // compact_uint left q at ',' or ']'
            }
        }
        const char* close = q;
        std::uint64_t begin = 0, end = 0;
        if (!take(q, kOffsets) || !compact_uint(q, begin) || *q++ != ',' || !compact_uint(q, end) ||
            *q++ != ']' || q >= end_ || *q++ != '}') {
            return false;
        }
        p_ = q;
        t.dtype = last_dtype_;
        t.rank = rank;
        t.elements = elements;
        t.elements_overflow = overflow;
        t.shape_offset = static_cast<std::uint32_t>(open - begin_);
        t.shape_length = static_cast<std::uint32_t>(close - open);
        t.begin = begin;
        t.end = end;
        return true;
    }

    bool read_uint(std::uint64_t& value, std::string_view field) {
        skip_ws();
        if (p_ >= end_) return syntax("expected a number");
        if (*p_ != '-' && (*p_ < '0' || *p_ > '9')) return wrong_kind(field, "an integer");
        // Fast path: at most 19 digits (always fits in 64 bits), no leading zero,
        // not followed by a fraction or exponent. Anything else takes the full scan.
        if (*p_ >= '1' && *p_ <= '9') {
#ifdef PYAUDIT_FAST_DIGITS
            if (end_ - p_ >= 16) {
                const unsigned n = digit_run16(p_);
                const char next = n < 16 ? p_[n] : '0';
                if (n < 16 && next != '.' && next != 'e' && next != 'E') {
                    static constexpr std::uint64_t kDigitPow10[9] = {
                        1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};
                    value = n <= 8 ? leading_digits(p_, n)
                                   : leading_digits(p_, 8) * kDigitPow10[n - 8] + leading_digits(p_ + 8, n - 8);
                    p_ += n;
                    return true;
                }
            }
#endif
            const char* q = p_;
            std::uint64_t v = 0;
            while (q < end_ && q - p_ < 19 && *q >= '0' && *q <= '9') {
                v = v * 10 + static_cast<std::uint64_t>(*q - '0');
                ++q;
            }
            if (q == end_ || ((*q < '0' || *q > '9') && *q != '.' && *q != 'e' && *q != 'E')) {
                p_ = q;
                value = v;
                return true;
            }
        }
        const char* start = p_;
        bool plain = false;
        if (!scan_number(start, plain)) return false;
        const std::string_view token(start, static_cast<std::size_t>(p_ - start));
        if (!plain) {
            return fail(Rule::bad_number, "tensor " + quoted(current_tensor_) + ": " +
                                              std::string(field) + " holds " + std::string(token) +
                                              ", not a non-negative integer");
        }
        std::uint64_t v = 0;
        for (const char c : token) {
            if (!checked_mul(v, 10, v) || !checked_add(v, static_cast<std::uint64_t>(c - '0'), v)) {
                return fail(Rule::bad_number, "tensor " + quoted(current_tensor_) + ": " +
                                                  std::string(field) + " number " +
                                                  std::string(token.substr(0, 40)) +
                                                  " does not fit in 64 bits");
            }
        }
        value = v;
        return true;
    }

    bool read_shape(TensorRecord& t) {
        skip_ws();
        if (p_ >= end_) return syntax("expected a value");
        if (*p_ != '[') return wrong_kind("shape", "an array");
        const char* open = p_;
        t.rank = 0;
        t.elements = 1;
        t.elements_overflow = false;
        const bool read = each_member(']', [this, &t] {
            std::uint64_t d;
            if (!read_uint(d, "shape")) return false;
            if (t.rank == UINT32_MAX) return syntax("shape too long");
            ++t.rank;
            // As the reference: a checked fold that stays failed once it fails.
            if (!t.elements_overflow && !checked_mul(t.elements, d, t.elements)) {
                t.elements_overflow = true;
            }
            return true;
        });
        if (!read) return false;
        t.shape_offset = static_cast<std::uint32_t>(open - begin_);
        t.shape_length = static_cast<std::uint32_t>(p_ - open);
        return true;
    }

    bool read_offsets(TensorRecord& t) {
        skip_ws();
        if (p_ >= end_) return syntax("expected a value");
        if (*p_ != '[') return wrong_kind("data_offsets", "an array of 2 integers");
        std::uint64_t values[2] = {0, 0};
        std::size_t count = 0;
        const bool read = each_member(']', [this, &values, &count] {
            std::uint64_t v;
            if (!read_uint(v, "data_offsets")) return false;
            if (count < 2) values[count] = v;
            ++count;
            return true;
        });
        if (!read) return false;
        if (count != 2) {
            return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) +
                                              ": data_offsets holds " + std::to_string(count) +
                                              " numbers, not 2");
        }
        t.begin = values[0];
        t.end = values[1];
        return true;
    }

    // A dtype: a string, or serde's externally tagged form of a unit variant,
    // {"F32": null}, which the reference (serde) accepts as well.
    bool read_dtype(TensorRecord& t) {
        skip_ws();
        std::string name;
        if (p_ < end_ && *p_ == '"') {
            if (!read_string_value(name)) return false;
        } else if (p_ < end_ && *p_ == '{') {
            if (!enter()) return false;
            ++p_;
            skip_ws();
            if (p_ < end_ && *p_ == '}') {
                return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) +
                                                  ": dtype holds an empty object, not a string");
            }
            if (!read_string_value(name)) return false;
            if (!expect(':')) return false;
            skip_ws();
            if (p_ >= end_) return syntax("expected a value");
            if (*p_ != 'n') {
                if (!skip_value()) return false;
                return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) + ": dtype {" +
                                                  quoted(name) + ": ...} must map to null");
            }
            if (!literal("null")) return false;
            skip_ws();
            if (p_ < end_ && *p_ == ',') {
                return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) +
                                                  ": dtype holds an object of more than one key");
            }
            if (!expect('}')) return false;
            --depth_;
        } else {
            if (p_ >= end_) return syntax("expected a value");
            return wrong_kind("dtype", "a string");
        }
        const auto dtype = dtype_from_name(name);
        if (!dtype) {
            return fail(Rule::unknown_dtype, "tensor " + quoted(current_tensor_) +
                                                 ": unknown dtype " + quoted(name));
        }
        t.dtype = *dtype;
        return true;
    }

    // A tensor entry as serde reads a struct from a sequence:
    // [dtype, shape, data_offsets], exactly three elements.
    bool read_tensor_sequence(TensorRecord& t) {
        std::size_t count = 0;
        const bool read = each_member(']', [this, &t, &count] {
            bool ok = true;
            switch (count) {
                case 0: ok = read_dtype(t); break;
                case 1: ok = read_shape(t); break;
                case 2: ok = read_offsets(t); break;
                default: ok = skip_value(); break;
            }
            ++count;
            return ok;
        });
        if (!read) return false;
        if (count != 3) {
            return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) + ": entry is an array of " +
                                              std::to_string(count) +
                                              " elements, not [dtype, shape, data_offsets]");
        }
        return true;
    }

    bool read_tensor(TensorRecord& t) {
        skip_ws();
        if (p_ < end_ && *p_ == '[') return read_tensor_sequence(t);
        if (p_ >= end_) return syntax("expected a value");
        if (*p_ != '{') {
            if (!skip_value()) return false;
            return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) +
                                              ": entry is not an object");
        }
        bool seen_dtype = false, seen_shape = false, seen_offsets = false;
        const bool read = each_member('}', [&] {
            skip_ws();
            std::string_view raw;
            bool escaped;
            if (!read_string(raw, escaped, scratch_)) return false;
            const std::string_view key = escaped ? std::string_view(scratch_) : raw;
            if (!expect(':')) return false;
            if (key == "dtype") {
                if (seen_dtype) return duplicate_field("dtype");
                seen_dtype = true;
                return read_dtype(t);
            }
            if (key == "shape") {
                if (seen_shape) return duplicate_field("shape");
                seen_shape = true;
                return read_shape(t);
            }
            if (key == "data_offsets") {
                if (seen_offsets) return duplicate_field("data_offsets");
                seen_offsets = true;
                return read_offsets(t);
            }
            return skip_value();  // unknown fields are ignored, as serde does
        });
        if (!read) return false;
        const char* missing = !seen_dtype ? "dtype" : !seen_shape ? "shape" : !seen_offsets ? "data_offsets" : nullptr;
        if (missing) {
            return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) + ": missing field " +
                                              std::string(missing));
        }
        return true;
    }

    bool duplicate_field(std::string_view field) {
        return fail(Rule::wrong_type, "tensor " + quoted(current_tensor_) + ": duplicate field " +
                                          std::string(field));
    }

    bool read_metadata() {
        skip_ws();
        if (p_ < end_ && *p_ == 'n') {
            return literal("null");  // Option<HashMap>: null is "no metadata"
        }
        if (p_ >= end_) return syntax("expected a value");
        if (*p_ != '{') {
            if (!skip_value()) return false;
            return fail(Rule::bad_metadata, "__metadata__ is not a map of strings to strings");
        }
        out_.has_metadata = true;
        return each_member('}', [this] {
            skip_ws();
            std::string key, value;
            if (!read_string_value(key)) return false;
            if (!expect(':')) return false;
            skip_ws();
            if (p_ >= end_) return syntax("expected a value");
            if (*p_ != '"') {
                if (!skip_value()) return false;
                return fail(Rule::bad_metadata, "__metadata__ value of " + quoted(key) +
                                                    " is not a string");
            }
            if (!read_string_value(value)) return false;
            // A repeated key overwrites, as a map does.
            auto [it, inserted] = metadata_index_.emplace(key, out_.metadata.size());
            if (inserted) {
                out_.metadata.emplace_back(std::move(key), std::move(value));
            } else {
                out_.metadata[it->second].second = std::move(value);
            }
            return true;
        });
    }
};

bool HeaderReader::run() {
    skip_ws();
    if (p_ >= end_) return fail(Rule::not_json, "invalid JSON: the header is empty");
    if (*p_ != '{') {
        if (*p_ == '[' || *p_ == '"' || *p_ == 't' || *p_ == 'f' || *p_ == 'n' || *p_ == '-' ||
            (*p_ >= '0' && *p_ <= '9')) {
            const std::string_view kind = kind_here();
            if (!skip_value()) return false;
            skip_ws();
            if (p_ != end_) return syntax("trailing characters after the header value");
            return fail(Rule::wrong_type, "the header is " + std::string(kind) + ", not a JSON object");
        }
        return syntax("expected '{'");
    }
    bool seen_metadata = false;
    const bool read = each_member('}', [this, &seen_metadata] {
        skip_ws();
        std::string_view raw;
        bool escaped;
        if (!read_string(raw, escaped, scratch_)) return false;
        const std::string_view key = escaped ? std::string_view(scratch_) : raw;
        if (key == "__metadata__") {
            if (!expect(':')) return false;
            current_tensor_ = {};
            if (seen_metadata) return fail(Rule::bad_metadata, "duplicate field __metadata__");
            seen_metadata = true;
            return read_metadata();
        }
        TensorRecord t;
        if (escaped) {
            t.name_escaped = true;
            t.name_offset = static_cast<std::uint32_t>(out_.escaped_names.size());
            out_.escaped_names.emplace_back(scratch_);
        } else {
            t.name_offset = static_cast<std::uint32_t>(raw.data() - begin_);
            t.name_length = static_cast<std::uint32_t>(raw.size());
        }
        current_tensor_ = escaped ? std::string_view(out_.escaped_names.back()) : raw;
        if (!expect(':')) return false;
        if (!read_tensor_compact(t) && !read_tensor(t)) return false;
        out_.tensors.push_back(t);
        current_tensor_ = {};
        return true;
    });
    if (!read) return false;
    current_tensor_ = {};
    skip_ws();
    if (p_ != end_) {
        if (*p_ == '\0') return fail(Rule::not_json, "invalid JSON: NUL padding after the header object" + at());
        return fail(Rule::not_json, "invalid JSON: trailing characters after the header object" + at());
    }
    return true;
}

void set_issue(ParsedHeader& out, Rule rule, std::string tensor, std::string message) {
    out.issue.rule = rule;
    out.issue.tensor = std::move(tensor);
    out.issue.message = std::move(message);
}

// Open addressing over indices into out.tensors: no allocation per name.
// Eight bytes a step: names are long and share long prefixes.
// The tail is the last eight bytes, overlapping the previous word, so that
// every load is a whole word (a variable-size copy to a stack word stalls the
// load that follows it).
std::uint64_t hash_name(std::string_view s) noexcept {
    constexpr std::uint64_t k = 0x9E3779B97F4A7C15ULL;
    const std::size_t n = s.size();
    std::uint64_t h = n * k;
    std::uint64_t w = 0;
    if (n >= 8) {
        for (std::size_t i = 0; i + 8 < n; i += 8) {
            std::memcpy(&w, s.data() + i, sizeof w);
            h = (h ^ w) * k;
            h ^= h >> 32;
        }
        std::memcpy(&w, s.data() + n - 8, sizeof w);
    } else {
        for (std::size_t i = 0; i < n; ++i) w = (w << 8) | static_cast<unsigned char>(s[i]);
    }
    h = (h ^ w) * k;
    return h ^ (h >> 29);
}

bool check_duplicates(ParsedHeader& out) {
    std::size_t capacity = 16;
    while (capacity < out.tensors.size() * 2) capacity *= 2;
    std::vector<std::uint32_t> slots(capacity, 0);  // 1 + index into out.tensors; 0: empty
    for (std::size_t i = 0; i < out.tensors.size(); ++i) {
        const std::string_view name = out.name(out.tensors[i]);
        std::size_t slot = static_cast<std::size_t>(hash_name(name)) & (capacity - 1);
        while (slots[slot] != 0) {
            if (out.name(out.tensors[slots[slot] - 1]) == name) {
                set_issue(out, Rule::duplicate_tensor, std::string(name),
                          "tensor " + quoted(name) + " appears more than once in the header");
                return false;
            }
            slot = (slot + 1) & (capacity - 1);
        }
        slots[slot] = static_cast<std::uint32_t>(i + 1);
    }
    return true;
}

std::string describe_shape(const ParsedHeader& out, const TensorRecord& t) {
    // Reads only the first dimensions from the text: a shape may hold millions.
    const std::string_view span = std::string_view(out.text).substr(t.shape_offset, t.shape_length);
    std::string s = "[";
    std::size_t shown = 0;
    bool in_number = false;
    for (const char c : span) {
        if (c >= '0' && c <= '9') {
            if (!in_number) {
                if (shown == 16) {
                    s += ", ...";
                    break;
                }
                if (shown > 0) s += ", ";
                ++shown;
                in_number = true;
            }
            s.push_back(c);
        } else {
            in_number = false;
        }
    }
    return s + "]";
}

// The reference's validate(): tensors sorted by (begin, end) must tile the data
// section from 0 with no hole or overlap, each extent exactly shape x dtype.
bool check_extents(ParsedHeader& out) {
    std::vector<std::uint32_t> order(out.tensors.size());
    std::iota(order.begin(), order.end(), 0U);
    const auto before = [&](std::uint32_t a, std::uint32_t b) {
        const TensorRecord& x = out.tensors[a];
        const TensorRecord& y = out.tensors[b];
        return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
    };
    // Writers lay tensors out in header order: then there is nothing to sort.
    if (!std::is_sorted(order.begin(), order.end(), before)) {
        std::stable_sort(order.begin(), order.end(), before);
    }
    std::uint64_t cursor = 0;
    const TensorRecord* previous = nullptr;
    for (const std::uint32_t index : order) {
        const TensorRecord& t = out.tensors[index];
        // Messages are built only on failure: the loop runs once per tensor.
        const auto name = [&] { return std::string(out.name(t)); };
        const auto range = [&] {
            return "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
        };
        if (t.begin != cursor) {
            if (t.begin > cursor) {
                if (previous == nullptr) {
                    set_issue(out, Rule::offsets_gap, name(),
                              "tensor " + quoted(name()) + " data_offsets " + range() +
                                  ": the data section must start at 0 (a hole of " +
                                  std::to_string(t.begin) + " bytes)");
                } else {
                    set_issue(out, Rule::offsets_gap, name(),
                              "tensor " + quoted(name()) + " data_offsets " + range() +
                                  ": a hole of " + std::to_string(t.begin - cursor) +
                                  " bytes after " + quoted(out.name(*previous)) +
                                  " (which ends at " + std::to_string(cursor) + ")");
                }
            } else {
                set_issue(out, Rule::offsets_overlap, name(),
                          "tensor " + quoted(name()) + " data_offsets " + range() + " overlap " +
                              quoted(previous ? out.name(*previous) : std::string_view("?")) +
                              " (which ends at " + std::to_string(cursor) + ")");
            }
            return false;
        }
        if (t.end < t.begin) {
            set_issue(out, Rule::offsets_reversed, name(),
                      "tensor " + quoted(name()) + " data_offsets " + range() + " end before they begin");
            return false;
        }
        cursor = t.end;
        previous = &t;
        std::uint64_t bits = 0;
        if (t.elements_overflow || !checked_mul(t.elements, std::uint64_t{dtype_bits(t.dtype)}, bits)) {
            set_issue(out, Rule::overflow, name(),
                      "tensor " + quoted(name()) + " shape " + describe_shape(out, t) + " x " +
                          std::string(dtype_name(t.dtype)) + ": the size overflows 64 bits");
            return false;
        }
        if (bits % 8 != 0) {
            set_issue(out, Rule::misaligned, name(),
                      "tensor " + quoted(name()) + " shape " + describe_shape(out, t) + " x " +
                          std::string(dtype_name(t.dtype)) + " is " + std::to_string(bits) +
                          " bits, not a whole number of bytes");
            return false;
        }
        const std::uint64_t size = bits / 8;
        if (t.end - t.begin != size) {
            set_issue(out, Rule::extent_mismatch, name(),
                      "tensor " + quoted(name()) + " shape " + describe_shape(out, t) + " x " +
                          std::string(dtype_name(t.dtype)) + " needs " + std::to_string(size) +
                          " bytes but data_offsets " + range() + " span " +
                          std::to_string(t.end - t.begin));
            return false;
        }
    }
    out.data_size = cursor;
    return true;
}

}  // namespace

void parse_header_text(ParsedHeader& out) {
    out.tensors.clear();
    out.escaped_names.clear();
    out.metadata.clear();
    out.has_metadata = false;
    out.issue = FormatIssue{};
    // UTF-8 comes first: a header that is not UTF-8 fails not-utf8 whatever else
    // is wrong with it. A header the reader accepts having seen only ASCII is
    // UTF-8 already (the reader passes every byte of it, see saw_non_ascii), so
    // the full check runs only when the reader failed or met a non-ASCII byte;
    // the verdicts are the same as checking first, one pass fewer in the case
    // of nearly every real header.
    HeaderReader reader(out);
    const bool parsed = reader.run();
    if (!parsed || reader.saw_non_ascii()) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(out.text.data());
        const std::size_t bad = first_invalid_utf8(bytes, out.text.size());
        if (bad != out.text.size()) {
            out.tensors.clear();
            out.escaped_names.clear();
            out.metadata.clear();
            out.has_metadata = false;
            set_issue(out, Rule::not_utf8, "",
                      "the header is not valid UTF-8 (byte " + std::to_string(bad) + ")");
            return;
        }
    }
    if (!parsed) return;
    if (!check_duplicates(out)) return;
    if (!check_extents(out)) return;
    std::uint64_t expected = 0;
    if (!checked_add(kLengthPrefix, out.header_size, expected) ||
        !checked_add(expected, out.data_size, expected) || expected > out.file_size) {
        const std::uint64_t available = out.file_size - kLengthPrefix - out.header_size;
        set_issue(out, Rule::data_truncated, "",
                  "the file is truncated: the header describes " + std::to_string(out.data_size) +
                      " bytes of tensor data but only " + std::to_string(available) + " follow it");
        return;
    }
    if (expected < out.file_size) {
        set_issue(out, Rule::trailing_bytes, "",
                  "the file has " + std::to_string(out.file_size - expected) +
                      " trailing bytes after the " + std::to_string(out.data_size) +
                      " bytes of tensor data the header describes");
        return;
    }
}

namespace {

std::string lfs_field(std::string_view text, std::string_view key) {
    const std::size_t at = text.find(key);
    if (at == std::string_view::npos) return "";
    const std::size_t start = at + key.size();
    const std::size_t stop = text.find('\n', start);
    std::string value(text.substr(start, stop == std::string_view::npos ? std::string_view::npos : stop - start));
    for (char& c : value) {
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) c = '?';
    }
    return value.substr(0, 100);
}

// What a file whose length prefix makes no sense starts like, when it is a format often
// mistaken for safetensors ("" when none): said first, so that a user reads "not a
// safetensors file" rather than a number.
std::string other_format(const unsigned char* data, std::size_t size) {
    auto starts = [&](std::string_view magic) {
        return size >= magic.size() &&
               std::string_view(reinterpret_cast<const char*>(data), magic.size()) == magic;
    };
    if (size >= 2 && data[0] == 0x80 && data[1] >= 2 && data[1] <= 5)
        return "not a safetensors file: it starts like a Python pickle (torch.save, legacy format); ";
    if (starts("PK\x03\x04")) return "not a safetensors file: it is a zip archive (torch.save writes one); ";
    if (starts("GGUF")) return "not a safetensors file: it is a GGUF file; ";
    if (starts("\x93NUMPY")) return "not a safetensors file: it is a NumPy .npy file; ";
    if (starts("\x89HDF")) return "not a safetensors file: it is an HDF5 file; ";
    return "";
}

}  // namespace

ParsedHeader parse_header_prefix(const unsigned char* data, std::size_t size,
                                 std::uint64_t file_size, std::uint64_t* needed) {
    ParsedHeader out;
    out.file_size = file_size;
    if (needed != nullptr) *needed = 0;
    if (looks_like_lfs_pointer(data, size)) {
        const std::string_view text(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 1024));
        std::string message = "a Git LFS pointer, not the weights (never downloaded: run `git lfs pull`)";
        const std::string oid = lfs_field(text, "\noid ");
        const std::string lfs_size = lfs_field(text, "\nsize ");
        if (!oid.empty()) message += "; oid " + oid;
        if (!lfs_size.empty()) message += ", " + lfs_size + " bytes";
        set_issue(out, Rule::lfs_pointer, "", std::move(message));
        return out;
    }
    if (file_size < kLengthPrefix || size < kLengthPrefix) {
        set_issue(out, Rule::too_small, "",
                  "the file holds " + std::to_string(file_size) +
                      " bytes, fewer than the 8-byte header length");
        return out;
    }
    const std::uint64_t n = read_length_prefix(data);
    out.header_size = n;
    if (n > kMaxHeaderSize) {
        set_issue(out, Rule::header_too_large, "",
                  other_format(data, size) + "the header length prefix says " + std::to_string(n) +
                      " bytes, over the 100,000,000-byte limit");
        return out;
    }
    if (n > file_size - kLengthPrefix) {
        set_issue(out, Rule::header_truncated, "",
                  other_format(data, size) + "the header length prefix says " + std::to_string(n) + " bytes but only " +
                      std::to_string(file_size - kLengthPrefix) + " follow it");
        return out;
    }
    if (n > size - kLengthPrefix) {
        if (needed != nullptr) {
            *needed = n + kLengthPrefix;
        } else {
            set_issue(out, Rule::header_truncated, "",
                      "only " + std::to_string(size) + " bytes of a " + std::to_string(n + kLengthPrefix) +
                          "-byte header were given");
        }
        return out;
    }
    out.text.assign(reinterpret_cast<const char*>(data) + kLengthPrefix, static_cast<std::size_t>(n));
    parse_header_text(out);
    return out;
}

}  // namespace pyaudit
