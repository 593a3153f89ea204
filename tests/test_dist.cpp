// Scale-out under `mpirun --oversubscribe` on loopback: data parallelism against one
// process, the same layout run twice, --shard optimizer against --shard none, pods,
// checkpoints written by one layout and resumed by others, the replica hash check, a
// killed rank, and a process count that does not factor.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "shell_util.h"
#include <thread>

#include "model/model_io.h"
#include "model/safetensors.h"
#include "model/tensor_parallel.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string g_dir;
std::string p(const std::string& f) { return g_dir + "/" + f; }

int sh(const std::string& cmd) { return palm::testing_util::run_status(cmd); }

// loopback only: shared memory between the ranks, TCP (out of band) on lo
const std::string kMpirun =
    "mpirun --oversubscribe --bind-to none --mca btl self,vader --mca oob_tcp_if_include lo -x OMP_NUM_THREADS=1 ";

std::string train(const std::string& out, const std::string& extra) {
  return std::string(PALM_BINARY) + " train --preset tiny --data " + p("data") + " --out " + p(out) +
         " --batch-size 8 --seq-len 64 --checkpoint-every 5 --eval-every 100 --no-card --threads 1 --hash-every 1 " + extra;
}

int mpi(int n, const std::string& out, const std::string& extra) {
  return sh(kMpirun + "-np " + std::to_string(n) + " " + train(out, extra) + " > " + p(out + ".log") + " 2>&1");
}

std::vector<json> metrics(const std::string& run) {
  std::vector<json> out;
  std::ifstream in(p(run) + "/metrics.jsonl");
  for (std::string l; std::getline(in, l);) {
    const auto j = json::parse(l);
    if (j.contains("loss")) out.push_back(j);
  }
  return out;
}

std::string model_of(const std::string& run, int step) {
  return p(run) + "/checkpoints/step-" + std::to_string(step) + "/model.safetensors";
}

// tensors in a safetensors file: the keys of its JSON header, without __metadata__
std::size_t tensor_count(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  const json h = json::parse(header);
  return h.size() - (h.contains("__metadata__") ? 1 : 0);
}

bool same_file(const std::string& a, const std::string& b) { return sh("cmp -s " + a + " " + b) == 0; }

double max_rel_diff(const std::string& a, const std::string& b) {
  const auto wa = palm::load_model(palm::process_backend(), a), wb = palm::load_model(palm::process_backend(), b);
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < wa->arena.size(); ++i) scale = std::max(scale, double(std::fabs(wa->arena.data()[i])));
  for (std::size_t i = 0; i < wa->arena.size(); ++i)
    worst = std::max(worst, std::fabs(double(wa->arena.data()[i]) - wb->arena.data()[i]) / scale);
  return worst;
}

class Dist : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_dist_XXXXXX").string();
    g_dir = ::mkdtemp(t.data());
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);  // CI runs as root; mpirun refuses it otherwise
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const std::string text = PALM_SOURCE_DIR "/tests/fixtures/text/english.txt";  // some text
    ASSERT_EQ(sh(std::string(PALM_BINARY) + " tokenizer train --input " + text + " --vocab-size 500 --out " + p("tok") + " 2>/dev/null"), 0);
    ASSERT_EQ(sh(std::string(PALM_BINARY) + " data build --tokenizer " + p("tok") + " --source text=" + text +
                 ":format=lines --out " + p("data") + " 2>/dev/null"),
              0);
    ASSERT_EQ(sh(train("single", "--steps 20") + " > /dev/null 2>&1"), 0);
  }
  static void TearDownTestSuite() { fs::remove_all(g_dir); }
};

TEST_F(Dist, DataParallelEqualsOneProcessAndRepeatsBitwise) {
  ASSERT_EQ(mpi(2, "dp2a", "--steps 20"), 0);
  ASSERT_EQ(mpi(2, "dp2b", "--steps 20"), 0);
  EXPECT_TRUE(same_file(model_of("dp2a", 20), model_of("dp2b", 20))) << "the same layout twice: the same bits";
  // gradients reduced block by block during the backward (default) or after it: the same bits
  ASSERT_EQ(mpi(2, "dp2c", "--steps 20 --no-overlap"), 0);
  EXPECT_TRUE(same_file(model_of("dp2a", 20), model_of("dp2c", 20)));
  std::ifstream olog(p("dp2a.log"));
  const std::string ol((std::istreambuf_iterator<char>(olog)), {});
  EXPECT_NE(ol.find("of which exposed"), std::string::npos) << ol;
  // against one process on the same global batch: only the summation order differs
  const auto one = metrics("single"), two = metrics("dp2a");
  ASSERT_EQ(one.size(), 20u);
  ASSERT_EQ(two.size(), 20u);
  for (std::size_t i = 0; i < 20; ++i)
    EXPECT_NEAR(two[i]["loss"].get<double>(), one[i]["loss"].get<double>(), 1e-6 * one[i]["loss"].get<double>()) << i;
  EXPECT_LT(max_rel_diff(model_of("single", 20), model_of("dp2a", 20)), 1e-5);
  std::ifstream log(p("dp2a.log"));
  const std::string l((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(l.find("rank 1/2 (pod 0, data 1, tensor 0)"), std::string::npos) << l;
  // with gradient accumulation the replicas' gradients are summed once per step
  ASSERT_EQ(sh(train("acc1", "--steps 5 --grad-accum 2") + " > /dev/null 2>&1"), 0);
  ASSERT_EQ(mpi(2, "acc2", "--steps 5 --grad-accum 2"), 0);
  const auto a = metrics("acc1"), b = metrics("acc2");
  ASSERT_EQ(b.size(), 5u);
  for (std::size_t i = 0; i < 5; ++i)
    EXPECT_NEAR(b[i]["grad_norm"].get<double>(), a[i]["grad_norm"].get<double>(), 1e-5 * a[i]["grad_norm"].get<double>()) << i;
}

TEST_F(Dist, ShardedOptimizerIsBitwiseTheUnshardedStepAndCheckpointsAnyLayoutResumes) {
  ASSERT_EQ(mpi(2, "none", "--steps 10"), 0);
  ASSERT_EQ(mpi(2, "shard", "--steps 10 --shard optimizer"), 0);
  EXPECT_TRUE(same_file(model_of("none", 10), model_of("shard", 10)));
  const std::string ck = p("shard") + "/checkpoints/step-10/";
  EXPECT_TRUE(fs::exists(ck + "optimizer-shard-0-of-2.safetensors"));
  EXPECT_TRUE(fs::exists(ck + "optimizer-shard-1-of-2.safetensors"));
  const json index = json::parse(std::ifstream(ck + "optimizer.index.json"));
  EXPECT_EQ(index["tensors"].size(), 2 * tensor_count(model_of("shard", 10))) << "momentum and second moment of every tensor";
  // the sharded checkpoint resumes on one process and on four, exactly as the unsharded one
  for (const char* run : {"none", "shard"}) sh("cp -r " + p(run) + " " + p(std::string(run) + "_1"));
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("none_1") + " --steps 15 --no-card > /dev/null 2>&1"), 0);
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("shard_1") + " --steps 15 --no-card > /dev/null 2>&1"), 0);
  EXPECT_TRUE(same_file(model_of("none_1", 15), model_of("shard_1", 15))) << "2 ranks sharded -> 1 rank";
  for (const char* run : {"none", "shard"}) sh("cp -r " + p(run) + " " + p(std::string(run) + "_4"));
  ASSERT_EQ(sh(kMpirun + "-np 4 " PALM_BINARY " train --resume " + p("none_4") + " --steps 15 --no-card --threads 1 > /dev/null 2>&1"), 0);
  ASSERT_EQ(sh(kMpirun + "-np 4 " PALM_BINARY " train --resume " + p("shard_4") +
               " --steps 15 --no-card --threads 1 --shard optimizer > /dev/null 2>&1"),
            0);
  EXPECT_TRUE(same_file(model_of("none_4", 15), model_of("shard_4", 15))) << "2 ranks sharded -> 4 ranks sharded";
  EXPECT_TRUE(fs::exists(p("shard_4") + "/checkpoints/step-15/optimizer-shard-3-of-4.safetensors"));
  // palm export: the interchange file, whatever wrote the checkpoint
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " export " + p("shard_4") + " --out " + p("export.safetensors") + " 2>/dev/null"), 0);
  EXPECT_TRUE(same_file(p("export.safetensors"), model_of("shard_4", 15)));
}

TEST_F(Dist, FullShardingIsBitwiseForTwoWayReductionsAndWithinRoundingOtherwise) {
  // --shard full: weights and gradients live on their owners only
  ASSERT_EQ(mpi(2, "full", "--steps 10 --shard full"), 0);
  const std::string ck = p("full") + "/checkpoints/step-10/";
  EXPECT_TRUE(fs::exists(ck + "model-shard-0-of-2.safetensors"));
  EXPECT_TRUE(fs::exists(ck + "model-shard-1-of-2.safetensors"));
  EXPECT_FALSE(fs::exists(ck + "model.safetensors")) << "no gather through one process";
  const std::string exp = std::string(PALM_BINARY) + " export ";
  ASSERT_EQ(sh(exp + p("full") + " --out " + p("full.safetensors") + " 2>/dev/null"), 0);
  if (!fs::exists(model_of("none", 10))) ASSERT_EQ(mpi(2, "none", "--steps 10"), 0);
  EXPECT_TRUE(same_file(p("full.safetensors"), model_of("none", 10))) << "bitwise the --shard none run";
  // against the same layout without --shard full. A sum over two data-parallel ranks is
  // a + b either way, so reduce-to-owner equals all-reduce bit for bit (pods of 2 x 2);
  // with 4-way data parallelism or with tensor parallelism the two paths associate the
  // sums differently (MPI's reduce vs all-reduce, the replicated K/V gradients), so the
  // runs agree to rounding only (measured: max relative difference 6e-8 to 9e-8)
  struct Case {
    std::string name, layout;
    bool bitwise;
  };
  for (const Case& k : {Case{"pods", "--pods 2", true}, Case{"tp", "--tp 2", false}, Case{"accum", "--grad-accum 2", false},
                        Case{"tp_accum", "--tp 2 --grad-accum 2", false}}) {
    ASSERT_EQ(mpi(4, "full_" + k.name, "--steps 10 --shard full " + k.layout), 0) << k.name;
    ASSERT_EQ(mpi(4, "plain_" + k.name, "--steps 10 " + k.layout), 0) << k.name;
    const std::string full = p("full_" + k.name + ".safetensors"), plain = p("plain_" + k.name + ".safetensors");
    ASSERT_EQ(sh(exp + p("full_" + k.name) + " --out " + full + " 2>/dev/null"), 0);
    ASSERT_EQ(sh(exp + p("plain_" + k.name) + " --out " + plain + " 2>/dev/null"), 0);
    if (k.bitwise) EXPECT_TRUE(same_file(full, plain)) << k.name << ": bitwise the unsharded run of the same layout";
    const double diff = max_rel_diff(full, plain);
    std::printf("--shard full vs unsharded, %s: max relative difference %.3g\n", k.name.c_str(), diff);
    EXPECT_LT(diff, 1e-5) << k.name;
  }
  // a fully sharded checkpoint resumes on one process
  sh("cp -r " + p("full_tp_accum") + " " + p("full_1"));
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("full_1") + " --steps 12 --no-card > /dev/null 2>&1"), 0);
  EXPECT_TRUE(fs::exists(model_of("full_1", 12)));
}

TEST_F(Dist, PodsStayBitwiseIdenticalAndADivergenceStopsLoudly) {
  ASSERT_EQ(mpi(4, "pods", "--steps 10 --pods 2"), 0) << "the hash check ran every step";
  EXPECT_LT(max_rel_diff(model_of("single", 10), model_of("pods", 10)), 1e-5);
  EXPECT_NE(mpi(4, "diverge", "--steps 10 --pods 2 --inject-divergence 3"), 0);
  std::ifstream log(p("diverge.log"));
  const std::string l((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(l.find("step 3: the parameters differ between replicas"), std::string::npos) << l;
  EXPECT_NE(mpi(3, "bad", "--steps 2 --pods 2"), 0);
  std::ifstream bad(p("bad.log"));
  const std::string b((std::istreambuf_iterator<char>(bad)), {});
  EXPECT_NE(b.find("3 processes do not factor as pods x data x tensor"), std::string::npos) << b;
}

TEST_F(Dist, TensorParallelEqualsOneProcessAndReshardsBitwise) {
  // TP(2), and DP(2) x TP(2) with the sharded optimizer, against one process (20 steps)
  ASSERT_EQ(mpi(2, "tp2", "--steps 20 --tp 2"), 0);
  ASSERT_EQ(mpi(4, "dp2tp2", "--steps 20 --tp 2 --shard optimizer"), 0);
  const auto one = metrics("single");
  for (const char* run : {"tp2", "dp2tp2"}) {
    const auto m = metrics(run);
    ASSERT_EQ(m.size(), 20u) << run;
    for (std::size_t i = 0; i < 20; ++i) {
      EXPECT_NEAR(m[i]["loss"].get<double>(), one[i]["loss"].get<double>(), 1e-6 * one[i]["loss"].get<double>()) << run << " " << i;
      EXPECT_NEAR(m[i]["grad_norm"].get<double>(), one[i]["grad_norm"].get<double>(), 1e-5 * one[i]["grad_norm"].get<double>())
          << run << " " << i << ": the global norm, summed over the shards";
    }
  }
  // every gradient tensor of the first step, reassembled from the tensor ranks, against
  // one process's
  ASSERT_EQ(sh(train("grad1", "--steps 1 --dump-gradients " + p("g1")) + " > /dev/null 2>&1"), 0);
  ASSERT_EQ(mpi(2, "grad2", "--steps 1 --tp 2 --dump-gradients " + p("g2")), 0);
  {
    const palm::SafetensorsFile one(p("g1-tp-0-of-1.safetensors"));
    const palm::SafetensorsFile r0(p("g2-tp-0-of-2.safetensors")), r1(p("g2-tp-1-of-2.safetensors"));
    const auto global = palm::read_model_config(model_of("single", 20));
    ASSERT_EQ(one.tensors().size(), r0.tensors().size());
    for (const auto& [name, rec] : one.tensors()) {
      std::int64_t n = 1;
      for (auto d : rec.shape) n *= d;
      std::vector<float> want(std::size_t(n), 0.0f), got(std::size_t(n), 0.0f);
      one.read_f32(rec, want.data());
      int r = 0;
      for (const palm::SafetensorsFile* f : {&r0, &r1}) {
        const auto& t = f->tensors().at(name);
        std::int64_t m = 1;
        for (auto d : t.shape) m *= d;
        std::vector<float> local(static_cast<std::size_t>(m), 0.0f);
        f->read_f32(t, local.data());
        palm::tp_insert(local.data(), rec.shape, palm::tp_slice(name, global, r++, 2), got.data());
      }
      double worst = 0, scale = 1e-30;
      for (std::int64_t i = 0; i < n; ++i) scale = std::max(scale, double(std::fabs(want[std::size_t(i)])));
      for (std::int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(want[std::size_t(i)]) - got[std::size_t(i)]) / scale);
      EXPECT_LT(worst, 1e-5) << name;
    }
  }
  // each tensor rank wrote its own shard; palm export reassembles the interchange file
  const std::string ck = p("tp2") + "/checkpoints/step-20/";
  EXPECT_TRUE(fs::exists(ck + "model-tp-0-of-2.safetensors"));
  EXPECT_TRUE(fs::exists(ck + "model-tp-1-of-2.safetensors"));
  EXPECT_FALSE(fs::exists(ck + "model.safetensors")) << "no gather through one process";
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " export " + p("tp2") + " --out " + p("tp2.safetensors") + " 2>/dev/null"), 0);
  EXPECT_LT(max_rel_diff(model_of("single", 20), p("tp2.safetensors")), 1e-5);
  // resharding round trip TP2 -> TP1 -> DP4 (sharded optimizer): the weights bit for bit
  sh("cp -r " + p("tp2") + " " + p("reshard"));
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("reshard") + " --steps 20 --no-card > /dev/null 2>&1"), 0);
  EXPECT_TRUE(fs::exists(p("reshard") + "/checkpoints/step-20/model.safetensors"));
  EXPECT_TRUE(same_file(p("reshard") + "/checkpoints/step-20/model.safetensors", p("tp2.safetensors"))) << "TP2 -> TP1";
  ASSERT_EQ(sh(kMpirun + "-np 4 " PALM_BINARY " train --resume " + p("reshard") +
               " --steps 20 --no-card --threads 1 --shard optimizer > /dev/null 2>&1"),
            0);
  EXPECT_TRUE(fs::exists(p("reshard") + "/checkpoints/step-20/optimizer-shard-3-of-4.safetensors"));
  EXPECT_TRUE(same_file(p("reshard") + "/checkpoints/step-20/model.safetensors", p("tp2.safetensors"))) << "TP1 -> DP4";
  // and it trains on from there like the TP2 run itself
  sh("cp -r " + p("tp2") + " " + p("tp2_more"));
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("tp2_more") + " --steps 22 --no-card > /dev/null 2>&1"), 0);
  ASSERT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("reshard") + " --steps 22 --no-card > /dev/null 2>&1"), 0);
  EXPECT_TRUE(same_file(model_of("tp2_more", 22), model_of("reshard", 22))) << "the optimizer state survived the reshards";
  // a degree that does not divide the heads is refused
  EXPECT_NE(mpi(3, "tp3", "--steps 2 --tp 3"), 0);
  std::ifstream log(p("tp3.log"));
  const std::string l((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(l.find("--tp 3 does not divide n_heads 4"), std::string::npos) << l;
}

TEST_F(Dist, AKilledRankEndsTheJobAndTheLastCheckpointResumes) {
  const std::string ranks = "'^" PALM_BINARY " train --preset tiny --data " + p("data") + " --out " + p("killed") + "'";
  struct Cleanup {  // whatever happens below, no rank outlives the test
    std::string pattern;
    ~Cleanup() { sh("pkill -9 -f " + pattern); }
  } cleanup{ranks};
  const pid_t job = ::fork();
  if (job == 0) {
    const std::string cmd = "exec " + kMpirun + "-np 2 " + train("killed", "--steps 100000") + " > " + p("killed.log") + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    ::_exit(127);
  }
  // wait for a checkpoint, then kill -9 one rank
  for (int i = 0; i < 300 && !fs::exists(p("killed/latest")); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (!fs::exists(p("killed/latest"))) ::kill(job, SIGKILL);
  ASSERT_TRUE(fs::exists(p("killed/latest")));
  // the newest rank process (anchored: not the shell that runs pkill, not mpirun)
  ASSERT_EQ(sh("pkill -9 -n -f " + ranks), 0);
  const auto t0 = std::chrono::steady_clock::now();
  int st = 0;
  pid_t done = 0;
  while ((done = ::waitpid(job, &st, WNOHANG)) == 0 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ::kill(job, SIGKILL);
    ::waitpid(job, &st, 0);
  }
  EXPECT_NE(done, 0) << "the job hung after a rank died";
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0) << "non-zero exit";
  sh("pkill -9 -f " + ranks);
  // the newest complete checkpoint resumes (on one process) and goes on
  std::ifstream latest(p("killed/latest"));
  std::string name;
  latest >> name;
  const int at = std::stoi(name.substr(5));
  EXPECT_EQ(sh(std::string(PALM_BINARY) + " train --resume " + p("killed") + " --steps " + std::to_string(at + 5) +
               " --no-card > /dev/null 2>&1"),
            0);
  EXPECT_TRUE(fs::exists(model_of("killed", at + 5)));
}

}  // namespace
