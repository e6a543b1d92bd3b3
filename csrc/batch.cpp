#include "batch.hpp"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <thread>

#include "header_file.hpp"

namespace pyaudit {

unsigned default_jobs() noexcept {
    const unsigned cores = std::thread::hardware_concurrency();
    return cores == 0 ? 1 : cores;
}

std::vector<ParsedHeader> read_header_files(const std::vector<std::string>& paths, unsigned jobs) {
    std::vector<ParsedHeader> results(paths.size());
    if (jobs == 0) jobs = default_jobs();
    const std::size_t threads = std::min<std::size_t>(jobs, paths.size());
    std::atomic<std::size_t> next{0};
    auto work = [&]() {
        for (std::size_t i = next.fetch_add(1); i < paths.size(); i = next.fetch_add(1)) {
            results[i] = read_header_file(paths[i]);
        }
    };
    if (threads <= 1) {
        work();
        return results;
    }
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (std::size_t t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(work);
        } catch (const std::system_error&) {
            break;  // fewer threads than asked: the others share the work
        }
    }
    work();
    for (std::thread& thread : pool) thread.join();
    return results;
}

}  // namespace pyaudit
