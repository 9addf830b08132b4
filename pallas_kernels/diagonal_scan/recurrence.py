"""One step of ``h_t = a_t h_{t-1} + b_t`` on a row of features, real or complex as (re, im) parts."""


def step(a: tuple, b: tuple, h: tuple) -> tuple:
    """``a, b, h``: tuples of one (real) or two (re, im) fp32 arrays of the same shape."""
    if len(a) == 1:
        return (a[0] * h[0] + b[0],)
    (a_re, a_im), (b_re, b_im), (h_re, h_im) = a, b, h
    return (a_re * h_re - a_im * h_im + b_re, a_re * h_im + a_im * h_re + b_im)
