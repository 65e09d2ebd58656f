"""The adversarial corpus: dishonest products, each using one trick, that the audit must never pass."""
