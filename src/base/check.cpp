#include "base/check.h"

namespace palm {

void fail(const std::string& message) { throw Error(message); }

}  // namespace palm
