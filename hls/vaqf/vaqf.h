// vaqf kernel library: everything a generated project includes.
#ifndef VAQF_VAQF_H
#define VAQF_VAQF_H

#include "vaqf/cycles.h"
#include "vaqf/qarith.h"
#include "vaqf/ddr.h"
#include "vaqf/dense.h"
#include "vaqf/eltwise.h"
#include "vaqf/move.h"
#include "vaqf/matmul.h"
#include "vaqf/softmax.h"
#include "vaqf/layernorm.h"
#include "vaqf/conv.h"
#include "vaqf/pool.h"

#endif
