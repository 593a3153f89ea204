// Data pipeline: source parsing, exact and near-duplicate removal on crafted inputs,
// formats and bad documents, byte-identical builds whatever the thread count, shard
// corruption detection, and the loader's invariants (pure function of the step,
// rank-invariant global batch, one-window corpus, mixture proportions).
#include <gtest/gtest.h>

#include <algorithm>

#include <random>

#include <set>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/file_util.h"
#include "data/build.h"
#include "data/dedup.h"
#include "data/loader.h"
#include "data/shard.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace palm {
namespace {

namespace fs = std::filesystem;

class DataTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_data_XXXXXX").string();
    dir_ = ::mkdtemp(t.data());
    TokenizerTrainOptions o;
    o.inputs = {"/usr/lib/python3.11/json/"};
    o.vocab_size = 400;
    o.out = dir_ + "/tok";
    train_tokenizer(o);
    make_inputs();
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string p(const std::string& f) { return dir_ + "/" + f; }
  static void write(const std::string& f, const std::string& text) {
    fs::create_directories(fs::path(p(f)).parent_path());
    std::ofstream(p(f), std::ios::binary) << text;
  }
  static std::string words(int n, int seed) {
    std::string s;
    for (int i = 0; i < n; ++i) s += "w" + std::to_string(seed) + "_" + std::to_string((i * 7919) % 1000) + " ";
    return s;
  }
  static void make_inputs() {
    // lines: 6 documents, two exact copies of one of them
    write("lines.txt", "alpha beta\ngamma delta\nalpha beta\nepsilon\nalpha beta\nzeta eta theta\n\n");
    // code: 3 files, b is a near-duplicate of a (one word of 300 changed), c is different
    const std::string a = words(300, 1);
    std::string b = a;
    b.replace(b.find("w"), 1, "v");
    write("code/a.py", a);
    write("code/b.py", b);
    std::string c;  // different to the character (code is compared by edit distance)
    for (int i = 0; i < 300; ++i) c += "value_" + std::to_string((i * 104729) % 99991) + " = compute(" + std::to_string(i) + ")\n";
    write("code/c.py", c);
    write("code/skip.txt", words(50, 3));  // filtered by ext=py
    // fortune-style entries separated by %; the first one comes twice
    write("fortunes", "first fortune\nspans two lines\n%\nsecond\n%\nfirst fortune\nspans two lines\n%\nlast one\n");
    // jsonl with a malformed line, a missing field and invalid UTF-8; "alpha beta" repeats
    // a document of the lines source
    write("docs.jsonl", "{\"text\": \"json doc one\"}\n{\"text\": \"alpha beta\"}\nnot json\n{\"other\": 1}\n{\"text\": \"bad \\udc80\"}\n{\"text\": \"json doc two\"}\n");
    write("latin1.txt", "caf\xe9\n");  // invalid UTF-8 as a whole document
    write("short.txt", "ab\nabcdefghij\n");
  }
  static DataBuildOptions options(const std::string& out, int threads = 0) {
    DataBuildOptions o;
    o.tokenizer_dir = p("tok");
    o.sources = {parse_source("lines=" + p("lines.txt") + ":format=lines:weight=2"),
                 parse_source("code=" + p("code") + ":kind=code:ext=py"),
                 parse_source("fortunes=" + p("fortunes") + ":sep=%"),
                 parse_source("json=" + p("docs.jsonl") + ":format=jsonl"),
                 parse_source("latin=" + p("latin1.txt") + ":min_chars=1"),
                 parse_source("long=" + p("short.txt") + ":format=lines:min_chars=5")};
    o.val_fraction = 0.0;
    o.out = out;
    o.threads = threads;
    return o;
  }
  static inline std::string dir_;
};

TEST_F(DataTest, ParsesSourceSpecs) {
  const SourceSpec s = parse_source("code=src/**/*.py:kind=code:weight=0.2:ext=py,c:min_chars=10");
  EXPECT_EQ(s.name, "code");
  EXPECT_EQ(s.paths, std::vector<std::string>{"src/**/*.py"});
  EXPECT_EQ(s.kind, "code");
  EXPECT_TRUE(s.near_dedup) << "on by default for code";
  EXPECT_DOUBLE_EQ(s.weight, 0.2);
  EXPECT_EQ(s.ext, (std::vector<std::string>{"py", "c"}));
  EXPECT_EQ(s.min_chars, 10);
  EXPECT_FALSE(parse_source("books=b.txt:format=lines").near_dedup);
  EXPECT_EQ(parse_source("x=C:/odd:path.txt:sep=%").paths[0], "C:/odd:path.txt");
  EXPECT_THROW(parse_source("nopath"), Error);
  EXPECT_THROW(parse_source("a=b:format=xml"), Error);
  EXPECT_THROW(parse_source("a=b:weight=-1"), Error);
  EXPECT_THROW(parse_source("a=b:colour=red"), Error);
  EXPECT_THROW(parse_source("a b=c"), Error);
}

TEST_F(DataTest, BuildsDedupsAndCountsOnCraftedInputs) {
  const std::string out = p("built");
  EXPECT_THROW(build_data(options(out)), Error) << "the invalid-UTF-8-only source has no documents";
  EXPECT_FALSE(fs::exists(out)) << "a failed build leaves nothing behind";
  DataBuildOptions o = options(out);
  o.sources.erase(o.sources.begin() + 4);  // drop the latin-1 source
  const auto m = nlohmann::json::parse(build_data(o));
  auto src = [&](const std::string& name) {
    for (const auto& s : m["sources"]) if (s["name"] == name) return s;
    return nlohmann::json();
  };
  EXPECT_EQ(src("lines")["documents"], 4);
  EXPECT_EQ(src("lines")["duplicates"], 2);
  EXPECT_EQ(src("code")["files"], 3) << "ext=py";
  EXPECT_EQ(src("code")["documents"], 2);
  EXPECT_EQ(src("code")["near_duplicates"], 1);
  EXPECT_EQ(src("fortunes")["documents"], 3);
  EXPECT_EQ(src("fortunes")["duplicates"], 1);
  EXPECT_EQ(src("json")["documents"], 2);
  EXPECT_EQ(src("json")["duplicates"], 1) << "exact dedup across sources";
  EXPECT_EQ(src("json")["malformed_lines"], 3);  // not JSON, no field, a lone surrogate
  EXPECT_EQ(src("long")["documents"], 1);
  EXPECT_EQ(src("long")["filtered_documents"], 1) << "min_chars";
  EXPECT_NEAR(src("lines")["weight"].get<double>(), 2.0 / 6.0, 1e-12);
  // every document ends with <eod>, and the shards decode back to the documents
  const auto tok = Tokenizer::load(out + "/tokenizer");
  ShardReader lines(out + "/lines/train.bin", tok->sha256());
  std::vector<std::int32_t> ids(lines.tokens(), lines.tokens() + lines.size());
  EXPECT_EQ(ids.back(), kEodId);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), kEodId), 4);
  std::string text;
  for (auto id : ids) text += id == kEodId ? std::string("|") : tok->decode({id});
  EXPECT_EQ(text, "alpha beta|gamma delta|epsilon|zeta eta theta|");
  EXPECT_THROW(build_data(o), Error) << "an existing output is never overwritten";
}

TEST_F(DataTest, SourceWithOnlyDuplicatesIsAClearError) {
  DataBuildOptions o = options(p("dups"));
  o.sources = {parse_source("a=" + p("lines.txt") + ":format=lines"), parse_source("b=" + p("lines.txt") + ":format=lines")};
  try {
    build_data(o);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("source b: no documents left"), std::string::npos) << e.what();
  }
}

TEST_F(DataTest, BuildIsByteIdenticalWhateverTheThreads) {
  DataBuildOptions o1 = options(p("t1"), 1), o2 = options(p("t2"), 2);
  for (auto* o : {&o1, &o2}) {
    o->sources.erase(o->sources.begin() + 4);
    o->val_fraction = 0.3;
    o->seed = 5;
  }
  build_data(o1);
  build_data(o2);
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(p("t1"))) {
    if (!e.is_regular_file()) continue;
    const auto rel = fs::relative(e.path(), p("t1"));
    EXPECT_EQ(read_file(e.path().string()), read_file((fs::path(p("t2")) / rel).string())) << rel;
    ++files;
  }
  EXPECT_EQ(files, 3 + 5 * 2);  // manifest, 2 tokenizer files, train+val for 5 sources
}

TEST_F(DataTest, DetectsCorruptTruncatedAndForeignShards) {
  DataBuildOptions o = options(p("c"));
  o.sources = {parse_source("code=" + p("code") + ":kind=code:ext=py")};
  build_data(o);
  const std::string shard = p("c/code/train.bin");
  const std::string good = read_file(shard);
  EXPECT_NO_THROW(ShardReader r(shard));
  EXPECT_THROW(ShardReader(shard, std::string(64, 'a')), Error);
  std::string bad = good;
  bad[100] ^= 1;
  write_text_atomic(shard, bad);
  try {
    DataLoader l(p("c"), 8, 0);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }
  write_text_atomic(shard, good.substr(0, good.size() - 7));
  try {
    ShardReader r(shard);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  write_text_atomic(shard, "not a shard at all, just some text padding padding padding padding padding padding padding padding");
  EXPECT_THROW(ShardReader r(shard), Error);
}

// A data directory made directly from token streams (one per source).
std::string make_corpus(const std::string& dir, const std::vector<std::vector<std::int32_t>>& streams,
                        const std::vector<double>& weights, const std::string& sha) {
  fs::create_directories(dir);
  nlohmann::ordered_json m;
  m["tokenizer"] = {{"sha256", sha}, {"vocab_size", 1000}};
  m["sources"] = nlohmann::json::array();
  for (std::size_t s = 0; s < streams.size(); ++s) {
    const std::string name = "s" + std::to_string(s);
    fs::create_directories(dir + "/" + name);
    ShardWriter w(dir + "/" + name + "/train.bin", 1000, sha);
    w.append(streams[s].data(), streams[s].size());
    w.finish();
    ShardWriter v(dir + "/" + name + "/val.bin", 1000, sha);
    v.append(streams[s].data(), std::min<std::size_t>(streams[s].size(), 20));
    v.finish();
    m["sources"].push_back({{"name", name}, {"weight", weights[s]}, {"tokens", streams[s].size()},
                            {"shards", {{"train", {name + "/train.bin"}}, {"val", {name + "/val.bin"}}}}});
  }
  write_text_atomic(dir + "/" + kManifestFile, m.dump());
  return dir;
}

TEST_F(DataTest, LoaderIsAPureFunctionOfTheStepAndRankInvariant) {
  const std::string sha(64, 'b');
  std::vector<std::int32_t> a(5000), b(3000);
  for (int i = 0; i < 5000; ++i) a[i] = i % 997;
  for (int i = 0; i < 3000; ++i) b[i] = 500 + i % 499;
  const auto dir = make_corpus(p("mix"), {a, b}, {0.2, 0.8}, sha);
  const std::int64_t T = 16, B = 8;
  DataLoader one(dir, T, 42, sha);
  for (std::int64_t step : {0, 1, 7, 1000000}) {
    std::vector<std::int32_t> global(B * (T + 1)), again(B * (T + 1));
    one.train_batch(step, 0, 1, B, global.data());
    DataLoader fresh(dir, T, 42);  // a resumed run: no state
    fresh.train_batch(step, 0, 1, B, again.data());
    EXPECT_EQ(global, again);
    for (int R : {2, 4, 8}) {
      std::vector<std::int32_t> joined;
      for (int r = 0; r < R; ++r) {
        std::vector<std::int32_t> part(B / R * (T + 1));
        one.train_batch(step, r, R, B, part.data());
        joined.insert(joined.end(), part.begin(), part.end());
      }
      EXPECT_EQ(joined, global) << "R=" << R;
    }
    // every row is a contiguous window of one stream
    for (std::int64_t j = 0; j < B; ++j) {
      const std::int32_t* row = global.data() + j * (T + 1);
      const auto& s = row[0] >= 500 ? b : a;
      const auto it = std::search(s.begin(), s.end(), row, row + T + 1);
      EXPECT_NE(it, s.end()) << "row " << j;
    }
  }
  EXPECT_THROW(one.train_batch(0, 0, 3, B, nullptr), Error) << "8 rows do not split over 3 ranks";
  std::vector<std::int32_t> other(B * (T + 1)), first(B * (T + 1));
  DataLoader seeded(dir, T, 43);
  seeded.train_batch(0, 0, 1, B, other.data());
  one.train_batch(0, 0, 1, B, first.data());
  EXPECT_NE(other, first) << "the seed matters";
  EXPECT_THROW(DataLoader(dir, T, 42, std::string(64, 'c')), Error) << "tokenizer mismatch";
}

TEST_F(DataTest, MixtureProportionsMatchTheWeights) {
  const std::string sha(64, 'b');
  const auto dir = make_corpus(p("mix2"), {std::vector<std::int32_t>(4000, 1), std::vector<std::int32_t>(100, 2),
                                           std::vector<std::int32_t>(900, 3)},
                               {0.5, 0.3, 0.2}, sha);
  DataLoader l(dir, 32, 1);
  const int n = 40000;
  std::vector<int> count(3);
  for (int i = 0; i < n; ++i) ++count[l.source_of_sample(i)];
  const double w[] = {0.5, 0.3, 0.2};
  for (int s = 0; s < 3; ++s) {
    const double sd = std::sqrt(w[s] * (1 - w[s]) / n);
    EXPECT_NEAR(count[s] / double(n), w[s], 5 * sd) << "source " << s;
  }
}

TEST_F(DataTest, OneWindowCorpusYieldsThatWindowEveryTime) {
  const std::string sha(64, 'b');
  std::vector<std::int32_t> w(17);
  for (int i = 0; i < 17; ++i) w[i] = 100 + i;
  const auto dir = make_corpus(p("one"), {w}, {1.0}, sha);
  DataLoader l(dir, 16, 9);
  std::vector<std::int32_t> batch(4 * 17);
  for (std::int64_t step = 0; step < 50; ++step) {
    l.train_batch(step, 0, 1, 4, batch.data());
    for (int j = 0; j < 4; ++j) EXPECT_TRUE(std::equal(w.begin(), w.end(), batch.begin() + j * 17));
  }
  EXPECT_THROW(DataLoader(dir, 17, 0), Error) << "no source holds a window of 18";
  EXPECT_EQ(l.val_windows(), 1);
}

TEST(Dedup, MinHashEstimatesJaccard) {
  std::string a, b, c;
  for (int i = 0; i < 400; ++i) a += "t" + std::to_string(i) + " ";
  b = a;
  for (int i = 0; i < 400; i += 40) b.replace(b.find("t" + std::to_string(i) + " "), 1, "u");  // 10 words changed
  for (int i = 0; i < 400; ++i) c += "q" + std::to_string(i) + " ";
  MinHashSig sa, sb, sc;
  ASSERT_TRUE(minhash_signature(a, sa));
  ASSERT_TRUE(minhash_signature(b, sb));
  ASSERT_TRUE(minhash_signature(c, sc));
  EXPECT_GT(estimated_jaccard(sa, sb), 0.65);  // true 5-shingle Jaccard ~0.78
  EXPECT_LT(estimated_jaccard(sa, sc), 0.05);
  MinHashSig short_sig;
  EXPECT_FALSE(minhash_signature("too short", short_sig));
  NearDupIndex idx(0.6);
  EXPECT_FALSE(idx.check_and_add(sa));
  EXPECT_TRUE(idx.check_and_add(sb));
  EXPECT_FALSE(idx.check_and_add(sc));
}

// Levenshtein distance by the full table: the reference for the banded computation
std::size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1), prev[j] + 1, cur[j - 1] + 1});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

TEST(Dedup, BandedEditSimilarityEqualsTheFullTable) {
  std::mt19937 g(3);
  int above = 0;
  for (int t = 0; t < 3000; ++t) {
    std::string a(g() % 60, ' ');
    for (auto& c : a) c = "abcd"[g() % 4];
    std::string b = a;
    for (int e = 0, n = int(g() % 12); e < n; ++e) {  // a few random edits
      const std::size_t at = b.empty() ? 0 : g() % b.size();
      switch (g() % 3) {
        case 0: b.insert(b.begin() + std::ptrdiff_t(std::min(at, b.size())), "abcd"[g() % 4]); break;
        case 1: if (!b.empty()) b.erase(b.begin() + std::ptrdiff_t(at)); break;
        default: if (!b.empty()) b[at] = "abcd"[g() % 4];
      }
    }
    const double min_sim = 0.5 + 0.1 * double(g() % 5);
    const std::size_t longest = std::max(a.size(), b.size());
    const double want = longest ? 1.0 - double(levenshtein(a, b)) / double(longest) : 1.0;
    const double got = edit_similarity(a, b, min_sim);
    if (want >= min_sim) {
      ++above;
      ASSERT_DOUBLE_EQ(got, want) << a << " | " << b;
    } else {
      ASSERT_LT(got, min_sim) << a << " | " << b;
    }
  }
  EXPECT_GT(above, 500);
  EXPECT_LT(above, 2900);
}

// Python functions (top-level `def` blocks) and whole modules from the standard library:
// real, distinct code to plant near-copies of.
std::vector<std::string> python_functions(std::size_t lo, std::size_t hi, std::size_t want) {
  std::vector<std::string> out;
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator("/usr/lib/python3.11")) {
    if (e.path().extension() != ".py") continue;
    std::ifstream in(e.path());
    const std::string src((std::istreambuf_iterator<char>(in)), {});
    for (std::size_t at = src.find("\ndef "); at != std::string::npos && out.size() < want;) {
      const std::size_t end = src.find("\n\n\n", at + 1);
      const std::size_t next = src.find("\ndef ", at + 1);
      const std::string f = src.substr(at + 1, std::min(end, next) - at - 1);
      const std::string name = f.substr(4, f.find('(') - 4);
      if (f.size() >= lo && f.size() <= hi && name.size() >= 4 && names.insert(name).second) out.push_back(f);
      at = next;
      break;  // one function per module: distinct code
    }
    if (out.size() >= want) break;
  }
  return out;
}

std::vector<std::string> python_modules(std::size_t lo, std::size_t hi, std::size_t want) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/usr/lib/python3.11")) {
    if (e.path().extension() != ".py" || fs::file_size(e.path()) < lo || fs::file_size(e.path()) > hi) continue;
    std::ifstream in(e.path());
    out.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (out.size() >= want) break;
  }
  return out;
}

// A near-copy: the function's (or first function's) name renamed everywhere, a comment added.
std::string near_copy(const std::string& code) {
  const std::size_t d = code.find("def ");
  const std::string name = code.substr(d + 4, code.find('(', d) - d - 4);
  std::string out;
  for (std::size_t at = 0;;) {
    const std::size_t hit = code.find(name, at);
    out += code.substr(at, hit - at);
    if (hit == std::string::npos) break;
    out += name + "2";
    at = hit + name.size();
  }
  return "# near copy: one identifier renamed\n" + out;
}

int near_duplicates_found(const std::vector<std::string>& docs) {
  NearDupIndex idx(0.8, true);
  int found = 0;
  for (const auto& d : docs) {
    std::string folded = fold_whitespace(d);
    MinHashSig sig;
    if (minhash_signature_code(folded, sig) && idx.check_and_add(sig, std::move(folded))) ++found;
  }
  return found;
}

// The lowest estimated Jaccard between a file and its near-copy (above kCodeJaccardFloor,
// or the floor would hide the copy from the edit-distance check)
double lowest_copy_jaccard(const std::vector<std::string>& files) {
  double lowest = 1;
  for (const auto& f : files) {
    MinHashSig a, b;
    minhash_signature_code(fold_whitespace(f), a);
    minhash_signature_code(fold_whitespace(near_copy(f)), b);
    lowest = std::min(lowest, estimated_jaccard(a, b));
  }
  return lowest;
}

TEST(Dedup, CodeNearCopiesOfShortAndLongFilesAreFoundAndDistinctFilesKept) {
  if (!fs::exists("/usr/lib/python3.11")) GTEST_SKIP() << "needs /usr/lib/python3.11 (python3.11, installed by install-deps)";
  auto short_files = python_functions(200, 1500, 20);
  for (const auto& f : python_functions(60, 199, 200)) {  // very short: where shingles fail
    if (short_files.size() == 30) break;
    if (std::find(short_files.begin(), short_files.end(), f) == short_files.end()) short_files.push_back(f);
  }
  const auto long_files = python_modules(4000, 40000, 10);
  ASSERT_EQ(short_files.size(), 30u);
  ASSERT_EQ(long_files.size(), 10u);
  // distinct files only: nothing removed (false positives)
  std::vector<std::string> distinct = short_files;
  distinct.insert(distinct.end(), long_files.begin(), long_files.end());
  EXPECT_EQ(near_duplicates_found(distinct), 0) << "distinct files judged near-duplicates";
  // each file followed by its near-copy: every copy found
  std::vector<std::string> planted;
  for (const auto& f : distinct) {
    planted.push_back(f);
    planted.push_back(near_copy(f));
  }
  // which copies are near-duplicates by the definition (normalized edit similarity of
  // the folded texts >= 0.8, from the full table): all of them must be found, and no more
  int by_definition = 0;
  for (const auto& f : distinct) {
    const std::string a = fold_whitespace(f), b = fold_whitespace(near_copy(f));
    if (a.size() > kEditVerifyBytes) {
      ++by_definition;  // long files: a rename and a comment line are far below 20% of them
      continue;
    }
    by_definition += 1.0 - double(levenshtein(a, b)) / double(std::max(a.size(), b.size())) >= 0.8;
  }
  EXPECT_GE(by_definition, 30) << "most planted copies are near-duplicates by the definition";
  const int found = near_duplicates_found(planted);
  EXPECT_EQ(found, by_definition) << "30 short and 10 long planted near-copies";
  const double lowest = lowest_copy_jaccard(distinct);
  EXPECT_GT(lowest, kCodeJaccardFloor + 0.05);
  std::printf("lowest estimated Jaccard of a planted copy: %.3f\n", lowest);
  // the word 5-gram MinHash of text sources misses short code copies (why code differs)
  NearDupIndex words(0.8);
  int word_found = 0;
  for (const auto& f : planted) {
    MinHashSig sig;
    if (minhash_signature(f, sig) && words.check_and_add(sig)) ++word_found;
  }
  EXPECT_LT(word_found, found);
  // nor do character shingles alone: the edit distance finds the very short copies
  NearDupIndex shingles_only(0.8);
  int shingle_found = 0;
  for (const auto& f : planted) {
    MinHashSig sig;
    if (minhash_signature_code(fold_whitespace(f), sig) && shingles_only.check_and_add(sig)) ++shingle_found;
  }
  EXPECT_LT(shingle_found, found);
  std::printf("planted 40 near-copies, %d near-duplicates by edit distance: code dedup found %d, word 5-gram MinHash %d, "
              "character 5-gram MinHash alone %d\n", by_definition, found, word_found, shingle_found);
}

}  // namespace
}  // namespace palm
