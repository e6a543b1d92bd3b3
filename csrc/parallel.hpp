// One index-stealing loop over a pool of threads, for the batch entry points.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <system_error>
#include <thread>
#include <vector>

namespace pyaudit {

// Calls fn(i) for every i in [0, count) on up to `jobs` threads (the caller's
// included). Each index runs exactly once; fn must not throw.
template <typename Fn>
void parallel_for(std::size_t count, unsigned jobs, Fn&& fn) {
    const std::size_t threads = std::min<std::size_t>(jobs == 0 ? 1 : jobs, count);
    std::atomic<std::size_t> next{0};
    auto work = [&]() {
        for (std::size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) fn(i);
    };
    std::vector<std::thread> pool;
    if (threads > 1) pool.reserve(threads - 1);
    for (std::size_t t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(work);
        } catch (const std::system_error&) {
            break;  // fewer threads than asked: the others share the work
        }
    }
    work();
    for (std::thread& thread : pool) thread.join();
}

}  // namespace pyaudit
