# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
#
# attn_unity_group(<target> <group> <regex> <source>...): the sources whose
# path matches <regex> compile as one translation unit, so that the kernels
# they all instantiate are optimised once instead of once per file; the
# target's other sources stay one unit each. Each file keeps its helpers in a
# namespace named after it, so that they cannot collide. A no-op with
# ATTN_UNITY_GROUPS=OFF (one unit per file: quicker rebuilds after editing one).
function(attn_unity_group target group regex)
  if(NOT ATTN_UNITY_GROUPS)
    return()
  endif()
  set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_MODE GROUP)
  foreach(source IN LISTS ARGN)
    if(source MATCHES "${regex}")
      set_source_files_properties(${source} PROPERTIES UNITY_GROUP ${group})
    endif()
  endforeach()
endfunction()
