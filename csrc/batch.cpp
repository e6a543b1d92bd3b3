#include "batch.hpp"

#include <atomic>
#include <thread>

#include "header_file.hpp"
#include "parallel.hpp"

namespace pyaudit {

unsigned default_jobs() noexcept {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : cores;
}

std::vector<std::shared_ptr<const ParsedHeader>> read_header_files(const std::vector<std::string>& paths,
                                                                   unsigned jobs, std::size_t* from_page_cache) {
    std::vector<std::shared_ptr<const ParsedHeader>> results(paths.size());
    std::atomic<std::size_t> cached{0};
    HeaderCache cache;
    parallel_for(paths.size(), jobs == 0 ? default_jobs() : jobs, [&](std::size_t i) {
        bool hit = false;
        results[i] = read_header_shared(paths[i], &cache, &hit);
        if (hit) cached.fetch_add(1, std::memory_order_relaxed);
    });
    if (from_page_cache != nullptr) *from_page_cache = cached.load();
    return results;
}

}  // namespace pyaudit
