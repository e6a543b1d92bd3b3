// --verify-data: tensor bytes streamed through NaN / Inf / all-zero counters.
//
// Knows dtypes' bit layouts, nothing about models. Each tensor's bytes are read
// with pread into one fixed buffer (sequential advice on the file), so memory
// stays flat whatever the file's size. The scan is one branch-free reduction per
// block of elements (the largest magnitude: NaN/Inf present? all zero?), compiled
// for AVX2 where the CPU has it; only a block that holds a NaN or Inf is counted
// element by element.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "header.hpp"

namespace pyaudit {

inline constexpr std::size_t kDataBuffer = 1 << 20;  // bytes per read

struct TensorDataStats {
    std::uint64_t nan = 0;
    std::uint64_t inf = 0;
    bool all_zero = true;   // every element is (+/-) zero; false for empty tensors
    bool checked_values = false;  // the dtype has NaN/Inf encodings that were counted
};

struct FileDataResult {
    ParsedHeader header;                  // the validated header (issue set when invalid)
    std::vector<TensorDataStats> stats;   // parallel to header.tensors, when read
    std::string error;                    // I/O failure while reading data, if any
    std::uint64_t bytes_read = 0;
};

// Validates the header, then streams every tensor's bytes.
FileDataResult check_file_data(const std::string& path);

// Scans one buffer of a tensor's bytes (whole elements), accumulating into stats.
void scan_elements(Dtype dtype, const unsigned char* data, std::size_t size, TensorDataStats& stats);

std::vector<FileDataResult> check_files_data(const std::vector<std::string>& paths, unsigned jobs);

}  // namespace pyaudit
