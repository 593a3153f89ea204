// The default corpus every fresh Debian machine can get (scripts/install-deps.sh installs
// it; docs/data.md describes the mixture): a book, short texts in nine languages,
// a hacker's dictionary, technical prose and Python code.
#pragma once
#include <string>
#include <vector>

#include "data/sources.h"

namespace palm {

// Dumps what needs dumping (the Bible from bible-kjv, the gzipped Jargon File) into
// raw_dir and returns the sources. Throws Error naming a missing package.
std::vector<SourceSpec> default_corpus_sources(const std::string& raw_dir);

}  // namespace palm
