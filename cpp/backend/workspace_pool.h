#pragma once

#include <cstdint>
#include <memory>
#include <mutex>

#include "backend/ops.h"

namespace qwen2audio::backend {

// Workspaces kept between calls that each need one for a while (an encoder pass, Hugging Face's
// forward). A pass's scratch runs to hundreds of MB for a batch of 30 s windows, and the allocator
// hands blocks that large back to the system on free, so every call faulted them in again; on a GPU a
// workspace also carries a stream and library handles that take milliseconds to make. A call borrows
// a workspace for its lease; concurrent calls each get their own, and one idle workspace (the
// largest a call has needed) is kept for the next.
class WorkspacePool {
 public:
  class Lease {
   public:
    Lease(WorkspacePool& pool, std::unique_ptr<Workspace> workspace) : pool_(&pool), workspace_(std::move(workspace)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (workspace_) pool_->give_back(std::move(workspace_));
    }
    Workspace& operator*() const { return *workspace_; }

   private:
    WorkspacePool* pool_;
    std::unique_ptr<Workspace> workspace_;
  };

  Lease borrow() {
    std::unique_ptr<Workspace> workspace;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_) {
        workspace = std::move(idle_);
      } else {
        ++created_;
      }
    }
    if (!workspace) workspace = std::make_unique<Workspace>();
    return Lease(*this, std::move(workspace));
  }

  // Workspaces made so far: one per call that found none idle.
  int64_t created() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return created_;
  }

 private:
  void give_back(std::unique_ptr<Workspace> workspace) {
    std::unique_ptr<Workspace> surplus;  // freed outside the lock
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_)
      surplus = std::move(workspace);
    else
      idle_ = std::move(workspace);
  }

  mutable std::mutex mutex_;
  std::unique_ptr<Workspace> idle_;
  int64_t created_ = 0;
};

}  // namespace qwen2audio::backend
