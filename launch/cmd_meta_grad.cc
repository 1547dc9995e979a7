// `metaps meta-grad --case FILE.json`: runs one golden meta-gradient case through the engine (float32,
// oneDNN kernels unless --kernels reference) and prints one JSON object keyed like the case's expect.
#include <iostream>
#include <memory>
#include <string>

#include "launch/cli.h"
#include "worker/golden_case.h"
#include "worker/onednn_kernels.h"
#include "worker/reference_kernels.h"

namespace metaps::launch {

void RegisterMetaGradCommand(CLI::App& app, Action* action) {
  auto* cmd = app.add_subcommand("meta-grad", "Compute a golden case's meta-gradient and print it as JSON");
  auto path = std::make_shared<std::string>();
  auto kernels = std::make_shared<std::string>("onednn");
  auto first_layer = std::make_shared<std::string>("auto");
  cmd->add_option("--case", *path, "Golden case (JSON, see ../shared/README.md)")->required();
  cmd->add_option("--kernels", *kernels, "Kernels to compute with")->check(CLI::IsMember({"onednn", "reference"}));
  cmd->add_option("--first-layer", *first_layer, "Form of the first layer's inner loop (see docs/engine.md)")
      ->check(CLI::IsMember({"auto", "dense", "low_rank"}));
  cmd->callback([action, path, kernels, first_layer] {
    *action = [path, kernels, first_layer]() -> int {
      auto c = worker::LoadGoldenCase(*path);
      if (!c.ok()) {
        std::cerr << "meta-grad: " << c.status() << "\n";
        return 1;
      }
      c->options.first_layer = *worker::ParseFirstLayer(*first_layer);  // (CLI11 checked the name)
      std::unique_ptr<worker::Kernels> k;
      if (*kernels == "reference") {
        k = std::make_unique<worker::ReferenceKernels>();
      } else {
        auto made = worker::OneDnnKernels::Create();
        if (!made.ok()) {
          std::cerr << "meta-grad: " << made.status() << "\n";
          return 1;
        }
        k = std::move(made).value();
      }
      auto out = worker::RunGoldenCase(*c, k.get());
      if (!out.ok()) {
        std::cerr << "meta-grad: " << out.status() << "\n";
        return 1;
      }
      std::cout << out->dump() << "\n";
      return 0;
    };
  });
}

}  // namespace metaps::launch
