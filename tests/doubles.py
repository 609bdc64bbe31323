"""Stand-ins for other libraries' objects that the tests and benchmarks feed to fastbp."""


class DLPackOnly:
    """An object that offers nothing but the DLPack protocol (no __array__, no buffer)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()
