#include "batch.hpp"

#include <thread>

#include "header_file.hpp"
#include "parallel.hpp"

namespace pyaudit {

unsigned default_jobs() noexcept {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : cores;
}

std::vector<std::shared_ptr<const ParsedHeader>> read_header_files(const std::vector<std::string>& paths,
                                                                   unsigned jobs) {
    std::vector<std::shared_ptr<const ParsedHeader>> results(paths.size());
    HeaderCache cache;
    parallel_for(paths.size(), jobs == 0 ? default_jobs() : jobs,
                 [&](std::size_t i) { results[i] = read_header_shared(paths[i], &cache); });
    return results;
}

}  // namespace pyaudit
