// Runs a bounded piece of native work on a libuv worker thread and settles a Promise with its
// result on the JS thread. Inputs are copied into the job before it is queued, so JS may reuse or
// collect its arrays meanwhile; C++ exceptions reject the promise with their message.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>

namespace sealkit::addon {

template <typename R>
class AsyncJob final : public Napi::AsyncWorker {
 public:
  using Work = std::function<R()>;
  using Convert = std::function<Napi::Value(Napi::Env, R&)>;

  static Napi::Promise Start(Napi::Env env, const char* name, Work work, Convert convert,
                             std::function<void()> done = nullptr) {
    auto* job = new AsyncJob(env, name, std::move(work), std::move(convert), std::move(done));
    Napi::Promise promise = job->deferred_.Promise();
    job->Queue();
    return promise;
  }

 private:
  AsyncJob(Napi::Env env, const char* name, Work work, Convert convert, std::function<void()> done)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        convert_(std::move(convert)),
        done_(std::move(done)) {}

  void Execute() override {
    try {
      result_ = std::make_unique<R>(work_());
    } catch (const std::exception& e) {
      SetError(e.what());
    } catch (...) {
      SetError("unknown native error");
    }
  }
  void OnOK() override {
    if (done_) done_();
    Napi::Env env = Env();
    try {
      deferred_.Resolve(convert_(env, *result_));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (done_) done_();
    deferred_.Reject(e.Value());
  }

  Napi::Promise::Deferred deferred_;
  Work work_;
  Convert convert_;
  std::function<void()> done_;
  std::unique_ptr<R> result_;
};

}  // namespace sealkit::addon
