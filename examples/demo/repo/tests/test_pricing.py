import sys
import unittest

sys.path.insert(0, "src")

from shop.pricing import apply_discount  # noqa: E402


class ApplyDiscount(unittest.TestCase):
    def test_no_discount(self) -> None:
        self.assertEqual(apply_discount(1000, 0), 1000)

    def test_rounds_half_up(self) -> None:
        self.assertEqual(apply_discount(999, 50), 500)


if __name__ == "__main__":
    unittest.main()
