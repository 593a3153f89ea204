// The lossless vocabulary: round trips over crafted edge cases, random Unicode and real
// multilingual text and code; digits; special tokens; invalid UTF-8; the library's own
// decoder as an independent check; training determinism and its refusals.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "base/check.h"
#include "base/file_util.h"
#include "base/utf8.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"

namespace palm {
namespace {

namespace fs = std::filesystem;

// Real text in several languages and scripts (Debian's fortunes) plus Python code.
const std::vector<std::string>& corpus_specs() {
  static const std::vector<std::string> s = {
      "/usr/share/games/fortunes/fortunes", "/usr/share/games/fortunes/de/*",
      "/usr/share/games/fortunes/ru/*",     "/usr/share/games/fortunes/pl/*",
      "/usr/share/games/fortunes/cs/*",     "/usr/share/games/fortunes/tang300",
      "/usr/share/games/fortunes/chinese",  "/usr/share/games/fortunes/brasil",
      "/usr/lib/python3.11/json/*.py",      "/usr/lib/python3.11/textwrap.py"};
  return s;
}

// The text files of corpus_specs(), without fortune's binary index files (.dat).
std::vector<std::string> corpus_files() {
  std::vector<std::string> out;
  for (const auto& f : expand_inputs(corpus_specs())) {
    if (fs::path(f).extension() != ".dat") out.push_back(f);
  }
  return out;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string t = (fs::temp_directory_path() / "palm_tok_XXXXXX").string();
    dir_ = ::mkdtemp(t.data());
    TokenizerTrainOptions o;
    o.inputs = corpus_files();
    o.vocab_size = 4000;
    o.max_sentences = 30000;
    o.out = dir_ + "/tok";
    report_ = train_tokenizer(o);
    tok_ = Tokenizer::load(o.out).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    fs::remove_all(dir_);
  }
  static void expect_round_trip(const std::string& s, const std::string& what = "") {
    const auto ids = tok_->encode(s);
    ASSERT_EQ(tok_->decode(ids), s) << what;
    for (auto id : ids) ASSERT_TRUE(id >= 0 && id < tok_->vocab_size());
  }
  static inline std::string dir_;
  static inline TokenizerTrainReport report_;
  static inline Tokenizer* tok_ = nullptr;
};

TEST_F(TokenizerTest, SpecialIdsAndByteTokens) {
  EXPECT_EQ(tok_->vocab_size(), 4000);
  EXPECT_EQ(tok_->piece(kPadId), "<pad>");
  EXPECT_EQ(tok_->piece(kEodId), "<eod>");
  EXPECT_EQ(tok_->piece(kUnkId), "<unk>");
  for (int b = 0; b < 256; ++b) {
    const auto id = tok_->byte_id(static_cast<unsigned char>(b));
    ASSERT_TRUE(tok_->is_byte(id)) << b;
    EXPECT_EQ(tok_->decode({id}), std::string(1, char(b)));
  }
  // the text "<eod>" is text, never the control token
  for (auto id : tok_->encode("<eod><pad><unk>")) EXPECT_GT(id, kUnkId);
  EXPECT_EQ(tok_->decode({kPadId, kEodId}), "");
}

TEST_F(TokenizerTest, RoundTripsTheHardCases) {
  const std::vector<std::string> cases = {
      "", " ", "  leading", "trailing   ", "a  b   c    d", "\t\tindented\twith tabs\t",
      "windows\r\nlines\r\n", "\n\n\nblank lines\n\n", "    def f(x):\n        return x\n",
      "emoji 🙂🚀👩‍👩‍👧 and flags 🇫🇷", "CJK 東京都 日本語のテキスト 한국어", "RTL עברית العربية",
      "combining e\u0301 a\u0308 \u0915\u094D\u0937", "controls \x01\x02\x1b[31m\x7f",
      "the marker \u2581 itself \u2581\u2581 and ▁x", "never seen: 𐀀 𓀀 ꙮ \U0010FFFF",
      "replacement char \uFFFD", "digits 1234567890 and 3.14159", "<eod> <0x41> ▁▁",
      std::string(5000, ' '), std::string(3000, 'a') + "\n" + std::string(3000, '\t')};
  for (const auto& c : cases) expect_round_trip(c, c.substr(0, 40));
}

// Random valid UTF-8: scalar values from every plane (no NUL, no surrogates), mixed
// with spaces, newlines and ASCII so that pieces and bytes interleave.
TEST_F(TokenizerTest, RoundTripsRandomUnicode) {
  std::mt19937 g(1234);
  auto append_cp = [](std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
      s += char(cp);
    } else if (cp < 0x800) {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += char(0xE0 | (cp >> 12));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    } else {
      s += char(0xF0 | (cp >> 18));
      s += char(0x80 | ((cp >> 12) & 0x3F));
      s += char(0x80 | ((cp >> 6) & 0x3F));
      s += char(0x80 | (cp & 0x3F));
    }
  };
  for (int n = 0; n < 3000; ++n) {
    std::string s;
    const int len = int(g() % 40);
    for (int i = 0; i < len; ++i) {
      std::uint32_t cp;
      switch (g() % 6) {
        case 0: cp = " \n\t"[g() % 3]; break;
        case 1: cp = 0x20 + g() % 95; break;
        case 2: cp = 0x80 + g() % 0x780; break;
        case 3: cp = 0x800 + g() % 0xF800; break;
        case 4: cp = 0x10000 + g() % 0x100000; break;
        default: cp = 1 + g() % 0x1F; break;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x2581;  // surrogates are not scalar values
      append_cp(s, cp);
    }
    ASSERT_EQ(find_invalid_utf8(s), std::string::npos);
    expect_round_trip(s, "random string " + std::to_string(n));
  }
}

TEST_F(TokenizerTest, RoundTripsRealMultilingualTextAndCode) {
  int files = 0, skipped = 0;
  std::int64_t bytes = 0;
  for (const auto& f : corpus_files()) {
    const std::string text = read_file(f);
    if (find_invalid_utf8(text) != std::string::npos) {
      ++skipped;  // a few legacy fortune files are Latin-1
      continue;
    }
    expect_round_trip(text, f);
    ++files;
    bytes += std::int64_t(text.size());
  }
  EXPECT_GE(files, 20);
  EXPECT_LE(skipped, files / 4);
  EXPECT_GT(bytes, 1 << 20);
}

TEST_F(TokenizerTest, EveryDigitIsItsOwnToken) {
  for (std::int32_t id = 0; id < tok_->vocab_size(); ++id) {
    const std::string b = tok_->decode({id});
    const bool has_digit = b.find_first_of("0123456789") != std::string::npos;
    if (has_digit) EXPECT_EQ(b.size(), 1u) << "piece " << tok_->piece(id) << " joins a digit with more";
  }
  const auto ids = tok_->encode("123.5 and 2024");
  std::vector<std::string> pieces;
  for (auto id : ids) pieces.push_back(tok_->decode({id}));
  EXPECT_EQ(pieces[0], "1");
  EXPECT_EQ(pieces[1], "2");
  EXPECT_EQ(pieces[2], "3");
  EXPECT_EQ(pieces[3], ".");
  EXPECT_EQ(pieces[4], "5");
}

TEST_F(TokenizerTest, InvalidUtf8IsAnErrorNamingTheOffset) {
  for (const auto& [bad, offset] : std::vector<std::pair<std::string, int>>{
           {"ok\xff", 2}, {"abc\xc3", 3}, {"\xed\xa0\x80 surrogate", 0}, {"x\xc0\xaf overlong", 1},
           {"hi \xf4\x90\x80\x80", 3}}) {
    try {
      tok_->encode(bad);
      ADD_FAILURE() << "accepted invalid UTF-8";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte offset " + std::to_string(offset)),
                std::string::npos)
          << e.what();
    }
  }
}

TEST_F(TokenizerTest, LinesEncodeIndependently) {
  // What streaming encode relies on: "\n" is a token of its own, so no piece crosses a line.
  const std::string a = "first line  with spaces\n", b = "\tsecond: 42\n", c = "third";
  auto whole = tok_->encode(a + b + c);
  auto parts = tok_->encode(a);
  for (const auto& s : {b, c}) {
    const auto p = tok_->encode(s);
    parts.insert(parts.end(), p.begin(), p.end());
  }
  EXPECT_EQ(whole, parts);
}

TEST_F(TokenizerTest, OurDecodeAgreesWithTheLibrary) {
  // spm_decode (the library's own tool) is an independent decoder for text without U+2581.
  const std::string text = "Grüße aus 東京!  x = [1, 2]\n\tdone 🙂";
  std::string ids;
  for (auto id : tok_->encode(text)) ids += std::to_string(id) + " ";
  const std::string cmd = "echo '" + ids + "' | spm_decode --model=" + dir_ + "/tok/tokenizer.model --input_format=id";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ASSERT_EQ(::pclose(p), 0);
  EXPECT_EQ(out, text + "\n");  // spm_decode ends its line
}

TEST_F(TokenizerTest, TrainingIsDeterministicAndRecordsTheHash) {
  TokenizerTrainOptions o;
  o.inputs = {"/usr/lib/python3.11/json/*.py"};
  o.vocab_size = 400;
  o.max_sentences = 500;  // fewer than the lines: the seed picks the sample
  o.seed = 7;
  o.out = dir_ + "/a";
  const auto ra = train_tokenizer(o);
  o.out = dir_ + "/b";
  const auto rb = train_tokenizer(o);
  o.out = dir_ + "/c";
  o.seed = 8;
  const auto rc = train_tokenizer(o);
  EXPECT_EQ(ra.sha256, rb.sha256);
  EXPECT_NE(ra.sha256, rc.sha256);
  EXPECT_EQ(Tokenizer::load(dir_ + "/a")->sha256(), ra.sha256);
  // an existing output is never overwritten
  EXPECT_THROW(train_tokenizer(o), Error);
  EXPECT_EQ(Tokenizer::load(dir_ + "/c")->sha256(), rc.sha256);
}

TEST_F(TokenizerTest, RefusesBadTrainingInputAndCorruptTokenizers) {
  TokenizerTrainOptions o;
  o.inputs = {dir_ + "/nothing-*.txt"};
  o.out = dir_ + "/x";
  EXPECT_THROW(train_tokenizer(o), Error);
  o.inputs = {"/usr/lib/python3.11/json/__init__.py"};
  o.vocab_size = 10;
  EXPECT_THROW(train_tokenizer(o), Error);
  EXPECT_FALSE(fs::exists(dir_ + "/x"));
  // a changed model file is refused by its recorded sha256
  fs::copy(dir_ + "/tok", dir_ + "/corrupt", fs::copy_options::recursive);
  {
    std::ofstream f(dir_ + "/corrupt/tokenizer.model", std::ios::app | std::ios::binary);
    f << "x";
  }
  try {
    Tokenizer::load(dir_ + "/corrupt");
    ADD_FAILURE() << "loaded a corrupted tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sha256 does not match"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::load(dir_ + "/missing"), Error);
}

}  // namespace
}  // namespace palm
