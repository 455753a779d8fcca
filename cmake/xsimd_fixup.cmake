# SPDX-FileCopyrightText: 2026 The attn authors
# SPDX-License-Identifier: Apache-2.0
#
# Included right after find_package(xsimd), by CMakeLists.txt and by the
# installed attnConfig.cmake. Debian 12's libxsimd-dev (8.1.0-7) exports the
# target xsimd linked to a bare name "xtl", which it neither depends on nor
# looks up, so every program linking xsimd fails with "cannot find -lxtl".
# xsimd's headers need xtl only with XSIMD_ENABLE_XTL_COMPLEX: use a real xtl
# when one is installed, and otherwise drop the dangling name.

if(TARGET xsimd AND NOT TARGET xtl)
  get_target_property(_attn_xsimd_imported xsimd IMPORTED)
  get_target_property(_attn_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_attn_xsimd_imported AND "xtl" IN_LIST _attn_xsimd_links)
    find_package(xtl QUIET)
    if(NOT TARGET xtl)
      list(REMOVE_ITEM _attn_xsimd_links xtl)
      set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${_attn_xsimd_links}")
    endif()
  endif()
  unset(_attn_xsimd_imported)
  unset(_attn_xsimd_links)
endif()
