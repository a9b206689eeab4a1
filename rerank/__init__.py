"""Rerankers judged on reranking lists: the knowledge-augmented reranker (KAR) that scores
RLRF4Rec's user-preference texts (:mod:`recalign.rerank.kar`)."""
