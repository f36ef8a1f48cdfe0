// Internal error type: thrown inside the library, turned into a tardis_status + message at the C boundary.
#pragma once

#include <stdexcept>
#include <string>

#include "tardis_edge.h"

namespace tardis {

class Error : public std::runtime_error {
public:
    Error(tardis_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
    tardis_status status() const noexcept { return status_; }

private:
    tardis_status status_;
};

}  // namespace tardis
