"""The HLO census: instructions sorted by kind from XLA's optimized text, loop bodies included,
fused computations and reducers not counted twice; and on a real compiled program."""
import jax
import jax.numpy as jnp

from mixmae_jax.measurement import hlo_census

TEXT = """HloModule m, is_scheduled=true

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %sum = f32[] add(%x, %y)
}

%moves (p: f32[8,4]) -> f32[4,8] {
  %p = f32[8,4]{1,0} parameter(0)
  ROOT %t = f32[4,8]{1,0} transpose(%p), dimensions={1,0}
}

%gelu (p.1: f32[4,8]) -> f32[4,8] {
  %p.1 = f32[4,8]{1,0} parameter(0)
  ROOT %m = f32[4,8]{1,0} multiply(%p.1, %p.1)
}

%body (s: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %s = (s32[], f32[4,8]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%s), index=0
  %v = f32[4,8]{1,0} get-tuple-element(%s), index=1
  %f = f32[4,8]{1,0} fusion(%v), kind=kLoop, calls=%gelu
  ROOT %out = (s32[], f32[4,8]{1,0}) tuple(%i, %f)
}

%cond (c: (s32[], f32[4,8])) -> pred[] {
  %c = (s32[], f32[4,8]{1,0}) parameter(0)
  ROOT %lt = pred[] constant(true)
}

ENTRY %main (a: f32[8,4], b: f32[8,8]) -> f32[] {
  %a = f32[8,4]{1,0} parameter(0)
  %b = f32[8,8]{1,0} parameter(1)
  %fusion.1 = f32[4,8]{1,0} fusion(%a), kind=kLoop, calls=%moves
  %dot.1 = f32[4,8]{1,0} dot(%fusion.1, %b), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %copy.1 = f32[4,8]{0,1} copy(%dot.1)
  %zero = s32[] constant(0)
  %init = (s32[], f32[4,8]{1,0}) tuple(%zero, %copy.1)
  %loop = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond, body=%body
  %res = f32[4,8]{1,0} get-tuple-element(%loop), index=1
  %c0 = f32[] constant(0)
  ROOT %r = f32[] reduce(%res, %c0), dimensions={0,1}, to_apply=%add
}
"""


def test_kinds_loop_bodies_and_what_is_not_counted():
  census = hlo_census.census(TEXT)
  assert census['matmul'] == {'count': 1, 'bytes': 4 * 8 * 4}
  # the transpose-only fusion and the copy; not the reducer's add, not the fusions' insides
  assert census['data_movement'] == {'count': 2, 'bytes': 2 * 4 * 8 * 4}
  # the loop body's elementwise fusion, and the reduce (the condition's constant is free)
  assert census['other']['count'] == 2
  assert census['collective']['count'] == 0


def test_a_compiled_program_has_its_matmul_and_its_window_transpose_counted():
  def step(x, w):
    windows = x.reshape(2, 4, 8, 4, 8, 16).transpose(0, 1, 3, 2, 4, 5).reshape(-1, 64, 16)
    return jnp.sum(jax.nn.gelu(windows @ w))

  text = jax.jit(jax.grad(step, argnums=1)).lower(jnp.ones((2, 32, 32, 16)),
                                                 jnp.ones((16, 16))).compile().as_text()
  census = hlo_census.census(text)
  assert census['matmul']['count'] >= 1
  assert sum(c['count'] for c in census.values()) >= 2
