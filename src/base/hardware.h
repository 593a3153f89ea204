// A description of the machine a run used, for training records and model cards.
#pragma once
#include <string>

namespace palm {

struct Hardware {
  std::string cpu_model;  // /proc/cpuinfo "model name", or "unknown"
  int logical_cpus = 0;   // online logical CPUs of the machine
  int usable_cpus = 0;    // those this process may run on
  std::string hostname;
};

Hardware describe_hardware();

}  // namespace palm
