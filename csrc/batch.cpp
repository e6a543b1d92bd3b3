#include "batch.hpp"

#include <thread>

#include "header_file.hpp"
#include "parallel.hpp"
#include "hash.hpp"

namespace pyaudit {

unsigned default_jobs() noexcept {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : cores;
}

std::vector<ParsedHeader> read_header_files(const std::vector<std::string>& paths, unsigned jobs) {
    std::vector<ParsedHeader> results(paths.size());
    parallel_for(paths.size(), jobs == 0 ? default_jobs() : jobs,
                 [&](std::size_t i) {
                     results[i] = read_header_file(paths[i]);
                     // Hashed here, on the reading threads: sweeps key their memos on it.
                     results[i].digest = hash_bytes(results[i].text);
                     results[i].has_digest = true;
                 });
    return results;
}

}  // namespace pyaudit
